# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Delivery metrics
#
# How outbound WhatsApp messages fare once they leave: delivered, read or failed, how long each
# step takes, and how the phone numbers compare. Everything comes from a kapso-sink export
# (`kapso-sink export`), opened with DuckDB; the models are the SQL files in `sql/analytics/`.
# Set `KAPSO_SINK_EXPORT_DIR` to read another export. Times are UTC.

# %%
import os
from pathlib import Path

import duckdb
import matplotlib.pyplot as plt

EXPORT_DIR = Path(os.environ.get("KAPSO_SINK_EXPORT_DIR", "../exports")).resolve()
con = duckdb.connect(str(EXPORT_DIR / "kapso.duckdb"), read_only=True)
con.execute("SET file_search_path = ?", [str(EXPORT_DIR)])  # views use relative paths


def query(sql):
    return con.sql(sql).df()


query("SELECT run, finished_at, to_position, new_events FROM export_runs ORDER BY run DESC LIMIT 1")

# %% [markdown]
# ## The funnel per number and day

# %%
query("""
    SELECT phone_number_id, day, messages, delivered, read, failed,
           round(delivery_rate, 3) AS delivery_rate, round(read_rate, 3) AS read_rate
    FROM delivery_funnel ORDER BY day, phone_number_id
""")

# %% [markdown]
# ## Delivery and read rates over time
#
# Per hour of sending, over all numbers: the share of messages delivered, and the share of
# delivered messages that were read.

# %% tags=["delivery_rates"]
hourly = query("""
    SELECT hour, sum(messages) AS messages,
           sum(delivered) / sum(messages) AS delivery_rate,
           sum(read) / nullif(sum(delivered), 0) AS read_rate
    FROM delivery_hourly GROUP BY hour ORDER BY hour
""")
fig, (rates, volume) = plt.subplots(2, 1, figsize=(9, 5), sharex=True,
                                    gridspec_kw={"height_ratios": [3, 1]})
rates.plot(hourly.hour, hourly.delivery_rate, marker="o", label="delivered / sent")
rates.plot(hourly.hour, hourly.read_rate, marker="o", label="read / delivered")
rates.set_ylim(0, 1.05)
rates.set_ylabel("rate")
rates.set_title("Delivery and read rates by hour sent")
rates.legend(loc="lower right")
rates.grid(alpha=0.3)
volume.bar(hourly.hour, hourly.messages, width=0.035, color="grey")
volume.set_ylabel("messages")
fig.autofmt_xdate()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Latency distributions
#
# Seconds from `sent` to `delivered` and from `delivered` to `read`, on a log scale: delivery
# takes seconds, reading takes minutes to hours.

# %%
latencies = query("SELECT stage, seconds FROM message_latencies WHERE seconds > 0")
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for ax, stage in zip(axes, ["sent_to_delivered", "delivered_to_read"], strict=True):
    seconds = latencies.loc[latencies.stage == stage, "seconds"]
    bins = [2**k for k in range(0, 18)]
    ax.hist(seconds, bins=bins, color="tab:blue" if stage == "sent_to_delivered" else "tab:green")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("seconds")
    ax.set_title(stage.replace("_", " "))
    if len(seconds):
        ax.axvline(seconds.median(), color="black", linestyle="--", label="median")
        ax.legend()
axes[0].set_ylabel("messages")
fig.tight_layout()
plt.show()

# %%
query("""
    SELECT stage, phone_number_id, messages, p50_seconds, p90_seconds, p99_seconds
    FROM latency_percentiles ORDER BY stage, phone_number_id
""")

# %% [markdown]
# ## Failures by error code

# %%
failures = query("""
    SELECT error_code, error_title, failures, share_of_failures
    FROM failures_by_error ORDER BY failures
""")
fig, ax = plt.subplots(figsize=(9, 0.5 + 0.5 * max(len(failures), 1)))
labels = [f"{code} {title[:45]}" for code, title in zip(failures.error_code, failures.error_title,
                                                         strict=True)]
ax.barh(labels, failures.failures, color="tab:red")
ax.set_xlabel("failed messages")
ax.set_title("Failures by WhatsApp error code")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Read rate by template and pricing category

# %%
query("""
    SELECT template, pricing_category, messages, delivered, read, round(read_rate, 3) AS read_rate
    FROM read_rate_by_template ORDER BY messages DESC
""")

# %% [markdown]
# ## Per-number comparison

# %%
numbers = query("""
    SELECT f.phone_number_id,
           sum(f.messages) AS messages,
           sum(f.delivered) / sum(f.messages) AS delivery_rate,
           sum(f.read) / nullif(sum(f.delivered), 0) AS read_rate,
           sum(f.failed) / sum(f.messages) AS failure_rate,
           any_value(l.p50_seconds) AS p50_delivery_seconds
    FROM delivery_funnel AS f
    LEFT JOIN latency_percentiles AS l
      ON l.phone_number_id = f.phone_number_id AND l.stage = 'sent_to_delivered'
    GROUP BY f.phone_number_id ORDER BY f.phone_number_id
""")
fig, ax = plt.subplots(figsize=(9, 3.5))
width = 0.25
x = range(len(numbers))
for i, column in enumerate(["delivery_rate", "read_rate", "failure_rate"]):
    ax.bar([p + (i - 1) * width for p in x], numbers[column], width, label=column.replace("_", " "))
ax.set_xticks(list(x), numbers.phone_number_id)
ax.set_ylim(0, 1.05)
ax.set_title("Rates per phone number")
ax.legend()
fig.tight_layout()
plt.show()
numbers.round(3)
