"""The event log: records, the group-commit writer and readers."""
