"""Read models folded from the event log: conversations and messages."""
