-- Read rate of sent outbound messages by template (free-form text apart) and pricing
-- category.
-- grain: template, pricing_category

with outbound as (

    select * from int_outbound_messages

),

counted as (

    select
        template,
        pricing_category,
        count(*) as messages,
        count(*) filter (where was_delivered) as delivered,
        count(*) filter (where was_read) as read

    from outbound
    where was_sent
    group by template, pricing_category

),

final as (

    select
        *,
        read / nullif(delivered, 0) as read_rate

    from counted

)

select * from final
