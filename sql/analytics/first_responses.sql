-- Time from a conversation's first customer message to the business's first reply after it.
-- grain: conversation_id

with messages as (

    select * from stg_messages

),

conversations as (

    select * from stg_conversations

),

first_inbound as (

    select conversation_id, min(message_at) as first_inbound_at
    from messages
    where direction = 'inbound' and conversation_id is not null
    group by conversation_id

),

first_reply as (

    select f.conversation_id, min(m.message_at) as first_reply_at
    from first_inbound as f
    join messages as m
      on m.conversation_id = f.conversation_id
     and m.direction = 'outbound'
     and m.message_at >= f.first_inbound_at
    group by f.conversation_id

),

final as (

    select
        f.conversation_id,
        coalesce(c.phone_number_id, 'unknown') as phone_number_id,
        f.first_inbound_at,
        r.first_reply_at,
        r.first_reply_at is not null as replied,
        date_diff('second', f.first_inbound_at, r.first_reply_at) as response_seconds

    from first_inbound as f
    left join first_reply as r using (conversation_id)
    left join conversations as c using (conversation_id)

)

select * from final
