-- A conversation's last message: its newest timed message, else the untimed one with the
-- highest id. One definition for the live projector's count refresh and the rebuild's
-- recount (they had a copy each). Two probes of messages_conversation_idx; a plain SQL
-- function, so the planner inlines it into the query that calls it.
CREATE FUNCTION kapso_sink_last_message(conversation text)
RETURNS TABLE (id text, message_at timestamptz)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    (SELECT m.id, m.message_at FROM messages m
     WHERE m.conversation_id = conversation AND m.message_at IS NOT NULL
     ORDER BY m.message_at DESC, m.id DESC LIMIT 1)
    UNION ALL
    (SELECT m.id, m.message_at FROM messages m
     WHERE m.conversation_id = conversation AND m.message_at IS NULL
     ORDER BY m.id DESC LIMIT 1)
    LIMIT 1
$$;
