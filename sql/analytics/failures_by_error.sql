-- Failed outbound messages by WhatsApp error code (0 when the failure carried none).
-- grain: error_code

with outbound as (

    select * from int_outbound_messages

),

failed as (

    select * from outbound
    where was_failed

),

counted as (

    select
        coalesce(error_code, 0) as error_code,
        coalesce(mode(error_title), 'unknown') as error_title,
        count(*) as failures,
        count(distinct phone_number_id) as phone_numbers,
        min(failed_at) as first_failed_at,
        max(failed_at) as last_failed_at

    from failed
    group by coalesce(error_code, 0)

),

final as (

    select
        *,
        failures / sum(failures) over () as share_of_failures

    from counted

)

select * from final
