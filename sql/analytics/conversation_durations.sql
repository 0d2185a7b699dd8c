-- How long conversations last: from creation to the last activity and to their end.
-- grain: conversation_id

with conversations as (

    select * from stg_conversations

),

measured as (

    select
        conversation_id,
        phone_number_id,
        status,
        created_at,
        last_active_at,
        ended_at,
        inbound_count,
        outbound_count,
        inbound_count + outbound_count as messages,
        date_diff('second', created_at, last_active_at) / 60.0 as active_minutes,
        date_diff('second', created_at, ended_at) / 60.0 as duration_minutes

    from conversations
    where created_at is not null

),

final as (

    select * from measured

)

select * from final
