"""The SNS topic that tells people (e-mail) and systems (any subscriber) how each job ended."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct


class Notifications(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, email: str | None) -> None:
        super().__init__(scope, construct_id)
        self.encryption_key = kms.Key(
            self,
            "TopicKey",
            enable_key_rotation=True,
            description="Encrypts DreamBooth job notifications at rest.",
        )
        self.topic = sns.Topic(
            self,
            "JobEvents",
            display_name="DreamBooth training jobs",
            master_key=self.encryption_key,
            enforce_ssl=True,
        )
        # E-mail delivery decrypts through SNS itself; this lets SNS use the key for other subscribers.
        # (In a key policy, Resource "*" means this key: a key policy cannot name another.)
        self.encryption_key.grant(
            iam.ServicePrincipal("sns.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*"
        )
        self.email_subscription = None
        if email:
            self.email_subscription = subscriptions.EmailSubscription(email)
            self.topic.add_subscription(self.email_subscription)
