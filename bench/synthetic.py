"""Synthetic log events generated straight into the database with set-based SQL.

Every unit of five events is one small piece of a realistic day: an inbound message, an
outbound message with its sent, delivered (or failed) and read (or not) statuses arriving in
the order Kapso may send them, and conversation lifecycle events.
"""

from __future__ import annotations

import asyncpg

GENERATE = r"""
WITH g AS (
    SELECT n, n / 5 AS u, n % 5 AS step, (n / 5) / 10 AS c,
           1761660000 + (n / 5) * 3 AS t
    FROM generate_series($1::bigint, $2::bigint - 1) AS n
), shaped AS (
    SELECT n, u, c, t,
        CASE
            WHEN step = 0 THEN 'whatsapp.message.received'
            WHEN step = 1 THEN 'whatsapp.message.sent'
            WHEN step = 2 AND u % 20 = 0 THEN 'whatsapp.message.failed'
            WHEN step = 2 THEN 'whatsapp.message.delivered'
            WHEN step = 3 AND u % 10 < 7 AND u % 20 <> 0 THEN 'whatsapp.message.read'
            WHEN step = 3 THEN 'whatsapp.conversation.inactive'
            WHEN u % 10 = 0 THEN 'whatsapp.conversation.created'
            WHEN u % 10 = 9 THEN 'whatsapp.conversation.ended'
            ELSE 'whatsapp.message.sent'
        END AS event_name,
        CASE WHEN step = 0 THEN 'wamid.I' || u
             WHEN step IN (1, 2, 3) THEN 'wamid.O' || u
             ELSE 'wamid.P' || u END AS wamid
    FROM g
), payloads AS (
    SELECT n, event_name, c, wamid,
        jsonb_build_object(
            'id', 'conv-' || c, 'phone_number', '+1555' || lpad((c % 100000)::text, 7, '0'),
            'status', CASE WHEN event_name = 'whatsapp.conversation.ended' THEN 'ended' ELSE 'active' END,
            'created_at', to_char(to_timestamp(1761660000 + c * 30) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
            'updated_at', to_char(to_timestamp(t) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
            'last_active_at', to_char(to_timestamp(t) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
            'phone_number_id', '10000000000000' || (c % 3),
            'kapso', jsonb_build_object('contact_name', 'Contact ' || c, 'messages_count', u % 10)
        ) AS conversation,
        t, u
    FROM shaped
)
INSERT INTO events (idem_hash, idempotency_key, kind, event_name, payload_version, received_at,
                    secret_id, body_sha256, phone_number_id, conversation_id, message_id, payload)
SELECT sha256(('synthetic:' || n)::bytea), gen_random_uuid()::text, 'kapso', event_name, 'v2',
       to_timestamp(t + 5), 'bench000', sha256(('body:' || n)::bytea),
       conversation ->> 'phone_number_id', 'conv-' || c,
       CASE WHEN event_name LIKE 'whatsapp.message.%' THEN wamid END,
       CASE
         WHEN event_name LIKE 'whatsapp.message.%' THEN jsonb_build_object(
           'message', jsonb_build_object(
             'id', wamid, 'timestamp', (t + 1)::text,
             'type', CASE WHEN u % 4 = 0 THEN 'template' ELSE 'text' END,
             'text', jsonb_build_object('body', 'Message number ' || u),
             'template', CASE WHEN u % 4 = 0 THEN jsonb_build_object('name', 'order_update') END,
             'kapso', jsonb_build_object(
               'direction', CASE WHEN event_name = 'whatsapp.message.received' THEN 'inbound' ELSE 'outbound' END,
               'status', split_part(event_name, '.', 3), 'origin', 'cloud_api', 'has_media', false,
               'statuses', CASE
                 WHEN event_name = 'whatsapp.message.received' THEN NULL
                 ELSE (SELECT jsonb_agg(jsonb_build_object(
                          'id', wamid, 'status', s.status, 'timestamp', (t + s.delay)::text,
                          'recipient_id', '1555' || c,
                          'pricing', jsonb_build_object('category', 'utility')))
                       FROM (VALUES ('sent', 1, 1), ('delivered', 3, 2), ('read', 60, 3),
                                    ('failed', 4, 2)) AS s(status, delay, rank)
                       WHERE (s.status = 'sent')
                          OR (s.status = 'delivered' AND event_name IN ('whatsapp.message.delivered', 'whatsapp.message.read'))
                          OR (s.status = 'read' AND event_name = 'whatsapp.message.read')
                          OR (s.status = 'failed' AND event_name = 'whatsapp.message.failed'))
               END)),
           'conversation', conversation, 'is_new_conversation', false,
           'phone_number_id', conversation ->> 'phone_number_id')
         WHEN event_name = 'whatsapp.conversation.inactive' THEN jsonb_build_object(
           'conversation', conversation,
           'since_message', jsonb_build_object('whatsapp_message_id', wamid,
               'created_at', conversation ->> 'updated_at'),
           'inactivity', jsonb_build_object('minutes', 60),
           'phone_number_id', conversation ->> 'phone_number_id')
         ELSE jsonb_build_object('conversation', conversation,
                                 'phone_number_id', conversation ->> 'phone_number_id')
       END
FROM payloads
ORDER BY n
"""


async def generate(
    conn: asyncpg.Connection, count: int, *, chunk: int = 100_000, progress=None
) -> None:
    """Append `count` synthetic events to the log, in chunks."""
    for start in range(0, count, chunk):
        await conn.execute(GENERATE, start, min(start + chunk, count))
        if progress is not None:
            progress(min(chunk, count - start))
