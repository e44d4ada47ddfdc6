"""Official E-VQA (BEM) and InfoSeek scoring, retrieval metrics, eval runs and reports."""
