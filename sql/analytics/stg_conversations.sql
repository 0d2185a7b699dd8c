-- The conversations read model: one row per Kapso conversation, times in UTC.
-- grain: conversation_id

with source as (

    select * from raw_conversations

),

renamed as (

    select
        id as conversation_id,
        coalesce(phone_number_id, 'unknown') as phone_number_id,
        status,
        inbound_count,
        outbound_count,
        inactivity_minutes,
        timezone('UTC', created_at) as created_at,
        timezone('UTC', ended_at) as ended_at,
        timezone('UTC', last_active_at) as last_active_at,
        timezone('UTC', last_inactive_at) as last_inactive_at

    from source

),

final as (

    select * from renamed

)

select * from final
