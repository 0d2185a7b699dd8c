-- The delivery funnel per number and hour, for rates over time.
-- grain: phone_number_id, hour

with outbound as (

    select * from int_outbound_messages

),

counted as (

    select
        phone_number_id,
        date_trunc('hour', sent_at) as hour,
        count(*) as messages,
        count(*) filter (where was_delivered) as delivered,
        count(*) filter (where was_read) as read,
        count(*) filter (where was_failed) as failed

    from outbound
    group by phone_number_id, date_trunc('hour', sent_at)

),

final as (

    select
        *,
        delivered / messages as delivery_rate,
        read / nullif(delivered, 0) as read_rate

    from counted

)

select * from final
