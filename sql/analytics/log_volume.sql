-- Events written to the log per day (ingest time) and event name.
-- grain: day, event_name

with events as (

    select * from stg_events

),

counted as (

    select
        day,
        event_name,
        count(*) as events,
        count(*) filter (where unparseable) as unparseable,
        count(distinct phone_number_id) as phone_numbers,
        min(position) as first_position,
        max(position) as last_position

    from events
    group by day, event_name

),

final as (

    select * from counted

)

select * from final
