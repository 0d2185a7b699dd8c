-- Outbound messages per number and day: how many were sent, delivered, read and failed.
-- grain: phone_number_id, day

with outbound as (

    select * from int_outbound_messages

),

counted as (

    select
        phone_number_id,
        cast(sent_at as date) as day,
        count(*) as messages,
        count(*) filter (where was_sent) as sent,
        count(*) filter (where was_delivered) as delivered,
        count(*) filter (where was_read) as read,
        count(*) filter (where was_failed) as failed

    from outbound
    group by phone_number_id, cast(sent_at as date)

),

final as (

    select
        *,
        delivered / messages as delivery_rate,
        read / nullif(delivered, 0) as read_rate,
        failed / messages as failure_rate

    from counted

)

select * from final
