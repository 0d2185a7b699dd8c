-- The event log: one row per logical event, as received (ingest time, UTC).
-- grain: position

with source as (

    select * from raw_events

),

renamed as (

    select
        position,
        day,
        timezone('UTC', received_at) as received_at,
        kind,
        event_name,
        phone_number_id,
        conversation_id,
        message_id,
        batch_index,
        parse_error is not null as unparseable

    from source

),

final as (

    select * from renamed

)

select * from final
