"""The query API over the read models and the log (/v1), and its OpenAPI document."""
