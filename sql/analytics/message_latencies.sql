-- Seconds between funnel steps, one row per message and step pair (sent->delivered,
-- delivered->read, sent->read), for distributions.
-- grain: message_id, stage

with outbound as (

    select * from int_outbound_messages

),

unpivoted as (

    select message_id, phone_number_id, template, pricing_category,
           'sent_to_delivered' as stage, sent_to_delivered_seconds as seconds
    from outbound
    union all
    select message_id, phone_number_id, template, pricing_category,
           'delivered_to_read', delivered_to_read_seconds
    from outbound
    union all
    select message_id, phone_number_id, template, pricing_category,
           'sent_to_read', sent_to_read_seconds
    from outbound

),

final as (

    select * from unpivoted
    where seconds is not null and seconds >= 0

)

select * from final
