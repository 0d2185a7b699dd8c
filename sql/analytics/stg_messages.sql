-- The messages read model: one row per WhatsApp message, event times in UTC.
-- grain: message_id

with source as (

    select * from raw_messages

),

renamed as (

    select
        id as message_id,
        conversation_id,
        coalesce(phone_number_id, 'unknown') as phone_number_id,
        direction,
        type as message_type,
        origin,
        template_name,
        pricing_category,
        status,
        error_code,
        error_title,
        read_without_delivered,
        timezone('UTC', message_at) as message_at,
        timezone('UTC', sent_at) as sent_at,
        timezone('UTC', delivered_at) as delivered_at,
        timezone('UTC', read_at) as read_at,
        timezone('UTC', failed_at) as failed_at

    from source

),

final as (

    select * from renamed

)

select * from final
