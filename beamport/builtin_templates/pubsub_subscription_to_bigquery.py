"""PubSub_Subscription_to_BigQuery: PubSub_to_BigQuery (pubsub_to_bigquery.py) reading a subscription
(inputSubscription) instead of a topic, as Google's template of that name."""

from __future__ import annotations

from beamport.builtin_templates import run_as_template
from beamport.builtin_templates.pubsub_to_bigquery import build_from


def build(pipeline, options):
    return build_from(pipeline, options, use_subscription=True)


if __name__ == "__main__":
    run_as_template(build, streaming=True)
