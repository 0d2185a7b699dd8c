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
# # Conversations
#
# How many conversations start, how long they last and how fast the business answers the first
# customer message. Reads a kapso-sink export (`KAPSO_SINK_EXPORT_DIR`, default `../exports`)
# with DuckDB; the models are the SQL files in `sql/analytics/`. Times are UTC.

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


query("""
    SELECT count(*) AS conversations,
           count(*) FILTER (WHERE status = 'ended') AS ended,
           round(avg(messages), 1) AS messages_per_conversation
    FROM conversation_durations
""")

# %% [markdown]
# ## Volume
#
# Conversations started per hour, stacked by phone number.

# %%
volume = query("""
    SELECT date_trunc('hour', created_at) AS hour, phone_number_id, count(*) AS conversations
    FROM conversation_durations GROUP BY ALL ORDER BY hour
""").pivot_table(index="hour", columns="phone_number_id", values="conversations", fill_value=0)
fig, ax = plt.subplots(figsize=(9, 3.5))
bottom = None
for number in volume.columns:
    ax.bar(volume.index, volume[number], width=0.035, bottom=bottom, label=number)
    bottom = volume[number] if bottom is None else bottom + volume[number]
ax.set_ylabel("conversations started")
ax.set_title("Conversations per hour")
ax.legend(title="phone number", fontsize="small")
fig.autofmt_xdate()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Duration
#
# Active time runs from creation to the last message; ended conversations also have a full
# duration, which includes the inactivity before Kapso closed them.

# %%
durations = query("SELECT active_minutes, duration_minutes, status FROM conversation_durations")
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
axes[0].hist(durations.active_minutes.dropna(), bins=30, color="tab:blue")
axes[0].set_xlabel("minutes")
axes[0].set_title("Active time (first to last message)")
ended = durations.loc[durations.status == "ended", "duration_minutes"].dropna() / 60
axes[1].hist(ended, bins=30, color="tab:purple")
axes[1].set_xlabel("hours")
axes[1].set_title("Duration of ended conversations")
axes[0].set_ylabel("conversations")
fig.tight_layout()
plt.show()

# %%
query("""
    SELECT phone_number_id, count(*) AS conversations,
           round(median(active_minutes), 1) AS median_active_minutes,
           round(quantile_cont(active_minutes, 0.9), 1) AS p90_active_minutes,
           round(median(duration_minutes) / 60, 1) AS median_duration_hours
    FROM conversation_durations GROUP BY phone_number_id ORDER BY phone_number_id
""")

# %% [markdown]
# ## First-response time
#
# Seconds from a conversation's first customer message to the first business message after it.

# %%
responses = query("""
    SELECT phone_number_id, response_seconds FROM first_responses WHERE replied
""")
fig, (hist, box) = plt.subplots(1, 2, figsize=(10, 3.5))
hist.hist(responses.response_seconds.clip(lower=1), bins=[2**k for k in range(0, 16)],
          color="tab:orange")
hist.set_xscale("log", base=2)
hist.set_xlabel("seconds")
hist.set_ylabel("conversations")
hist.set_title("First-response time")
groups = [g.response_seconds / 60 for _, g in responses.groupby("phone_number_id")]
box.boxplot(groups, showfliers=False)
box.set_xticks(range(1, len(groups) + 1), sorted(responses.phone_number_id.unique()))
box.set_ylabel("minutes")
box.set_title("First-response time per number")
fig.tight_layout()
plt.show()

# %%
query("""
    SELECT phone_number_id, count(*) AS conversations,
           round(avg(replied::int), 3) AS replied_share,
           median(response_seconds) AS median_seconds,
           quantile_cont(response_seconds, 0.9) AS p90_seconds
    FROM first_responses GROUP BY phone_number_id ORDER BY phone_number_id
""")
