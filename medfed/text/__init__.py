"""Radiology-report classification (MOSAIC-style): taxonomy files, report corpora as sites, backends
(rules, embedding, llm), evaluation and label tables for image sites."""
