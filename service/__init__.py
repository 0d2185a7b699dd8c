"""kapso-sink: a durable, event-sourced store for Kapso WhatsApp webhooks."""
