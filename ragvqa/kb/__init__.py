"""Knowledge-base building: Wikipedia sources -> sections/chunks -> parquet documents."""
