"""What the Pub/Sub built-in templates share: a Pub/Sub read whose topic or subscription is a runtime
parameter.

Beam's ReadFromPubSub takes its topic when the pipeline is built, so a classic template cannot use it (Google's
Java templates use PubsubIO's ValueProvider form). This is Beamport's executable Pub/Sub read
(beamport.io.pubsub: pulls, acknowledges after the engine commits, drops duplicates in keyed state, stops on
a drain), with the topic or subscription read from the template's parameters when the reader starts.
"""

from __future__ import annotations

from beamport.io.pubsub import PullAndDropDuplicates, PullMessages


class PullFromParameters(PullMessages):
    """PullMessages with its topic or subscription given at run time (ValueProviders, read in setup)."""

    def __init__(self, topic, subscription, with_attributes: bool):
        super().__init__("", "", "", "", with_attributes, None)  # None: the harness's PUBSUB_EMULATOR_HOST
        self.topic_parameter, self.subscription_parameter = topic, subscription

    def setup(self):
        self.topic = (self.topic_parameter.get() if self.topic_parameter else None) or ""
        self.subscription = (self.subscription_parameter.get() if self.subscription_parameter else None) or ""
        if bool(self.topic) == bool(self.subscription):
            raise ValueError(
                "Give exactly one of inputTopic (projects/PROJECT/topics/TOPIC) and inputSubscription "
                f"(projects/PROJECT/subscriptions/SUBSCRIPTION); got topic={self.topic!r}, "
                f"subscription={self.subscription!r}."
            )
        name = self.topic or self.subscription
        kind = "topics" if self.topic else "subscriptions"
        parts = name.split("/")
        if len(parts) != 4 or parts[0] != "projects" or parts[2] != kind or not parts[1] or not parts[3]:
            raise ValueError(f"{name!r} is not a Pub/Sub {kind[:-1]} name: projects/PROJECT/{kind}/NAME.")
        super().setup()


class ReadPubSubParameters(PullAndDropDuplicates):
    """Messages from a topic or a subscription named by runtime parameters: their data, or with
    `with_attributes` the serialized google.pubsub.v1.PubsubMessage (as beamport.io.pubsub.ReadPubSub)."""

    def __init__(self, topic=None, subscription=None, with_attributes: bool = False):
        super().__init__(PullFromParameters(topic, subscription, with_attributes))
