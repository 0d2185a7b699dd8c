-- Latency percentiles per number and stage, in seconds.
-- grain: phone_number_id, stage

with latencies as (

    select * from message_latencies

),

summarised as (

    select
        phone_number_id,
        stage,
        count(*) as messages,
        quantile_cont(seconds, 0.5) as p50_seconds,
        quantile_cont(seconds, 0.9) as p90_seconds,
        quantile_cont(seconds, 0.99) as p99_seconds,
        avg(seconds) as mean_seconds

    from latencies
    group by phone_number_id, stage

),

final as (

    select * from summarised

)

select * from final
