-- Outbound messages with the funnel steps they reached and the time between steps. A message
-- rejected before `sent` counts from its first known time.
-- grain: message_id

with messages as (

    select * from stg_messages

),

outbound as (

    select * from messages
    where direction = 'outbound'

),

timed as (

    select
        *,
        sent_at is not null as was_sent,
        delivered_at is not null or read_at is not null as was_delivered,
        read_at is not null as was_read,
        failed_at is not null as was_failed,
        date_diff('second', sent_at, delivered_at) as sent_to_delivered_seconds,
        date_diff('second', delivered_at, read_at) as delivered_to_read_seconds,
        date_diff('second', sent_at, read_at) as sent_to_read_seconds

    from outbound

),

steps as (

    select
        message_id,
        conversation_id,
        phone_number_id,
        message_type,
        coalesce(template_name, '(free-form)') as template,
        coalesce(pricing_category, '(unknown)') as pricing_category,
        status,
        error_code,
        error_title,
        coalesce(sent_at, message_at, failed_at) as sent_at,
        delivered_at,
        read_at,
        failed_at,
        was_sent,
        was_delivered,
        was_read,
        was_failed,
        sent_to_delivered_seconds,
        delivered_to_read_seconds,
        sent_to_read_seconds

    from timed

),

final as (

    select * from steps
    where sent_at is not null

)

select * from final
