-- Meta-kind deliveries: whether X-Idempotency-Key was the SHA-256 of the body, and the
-- contact identity of each message (business-scoped user id first, phone digits second).

ALTER TABLE deliveries ADD COLUMN key_is_body_sha256 boolean;
ALTER TABLE messages ADD COLUMN contact_id text;
