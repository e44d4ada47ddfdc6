"""Fine-tuning the ReT-2 retriever: ``ragvqa train``.

Modules (each one job; heavy imports stay inside them):

- ``config.py``      :class:`TrainConfig`, the paper's defaults and where each comes from
- ``data.py``        training data: M2KR-style JSONL, or a ragvqa KB plus question-document pairs
- ``batching.py``    the deterministic batch plan (which examples each step and rank sees)
- ``collate.py``     texts and images -> model inputs (tokeniser, image preprocessing)
- ``loss.py``        symmetric InfoNCE over in-batch negatives, gathered across processes
- ``distributed.py`` torchrun / DDP set-up (gloo on CPU, NCCL on GPU)
- ``init.py``        the model to start from: a ragvqa checkpoint, an official one, or backbones
- ``optim.py``       Adam with the cell / backbone learning rates and the LR schedule
- ``checkpoints.py`` atomic checkpoints and resuming
- ``evaluate.py``    recall@k on a held-out split
- ``metrics.py``     metrics JSONL and the plot
- ``loop.py``        :func:`train`, which ties them together

Nothing below this package (kb, retriever, index, ...) imports it.
"""
