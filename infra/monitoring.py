"""Operations: alarms on what needs a person, and a dashboard of runs, queues, training time and spot savings.

Alarms go to an ops topic (context ``ops_email``), an existing topic (``alarm_topic_arn``) or, by
default, the job notification topic. Sources:

- Step Functions execution metrics of the run state machine (runs by status, failed runs);
- Step Functions service-integration metrics of ``createTrainingJob.sync`` (training jobs succeeded,
  failed, timed out: a Train state past its TimeoutSeconds is a job stuck beyond any max runtime);
  these are per integration ARN, i.e. every state machine of the account and region that trains on
  SageMaker through Step Functions;
- SQS queue depth of the upload queue and its dead-letter queue;
- metric filters on FinishRun's ``run finished`` log line (lambdas/pipeline/run_metrics.py), this stack's
  own numbers: runs succeeded, training jobs failed or stopped (the failure rate), runs that timed out,
  training and billable seconds per run (whose ratio is the spot saving).
"""

from __future__ import annotations

from aws_cdk import Aws, Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from lambdas.jobs import failures
from lambdas.jobs.notification import SUCCEEDED
from lambdas.pipeline import run_metrics

TRAIN_INTEGRATION = "arn:aws:states:::sagemaker:createTrainingJob.sync"
STATES = "AWS/States"
DAY = Duration.days(1)
FIVE_MINUTES = Duration.minutes(5)
# Training job failure rate: alarm when at least this share of the jobs that ended in the window failed.
FAILURE_RATE_PERCENT = 50
FAILURE_RATE_WINDOW = Duration.hours(6)


def metric_namespace() -> str:
    """One namespace per stack: two deployments in one account keep their numbers apart."""
    return f"DreamBooth/{Aws.STACK_NAME}"


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        state_machine: sfn.IStateMachine,
        upload_queue: sqs.IQueue,
        dead_letter_queue: sqs.IQueue,
        finish_run_logs: logs.ILogGroup,
        notification_topic: sns.ITopic,
        topic_key: kms.IKey,
        ops_email: str | None = None,
        alarm_topic_arn: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.alarm_topic = self._alarm_topic(notification_topic, topic_key, ops_email, alarm_topic_arn)
        self.namespace = metric_namespace()
        self._metric_filters(finish_run_logs)

        def integration(metric: str, period: Duration = FIVE_MINUTES) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace=STATES,
                metric_name=metric,
                dimensions_map={
                    "ServiceIntegrationResourceArn": TRAIN_INTEGRATION.replace("aws", Aws.PARTITION, 1)
                },
                statistic="Sum",
                period=period,
            )

        self.alarms: dict[str, cloudwatch.Alarm] = {}

        def alarm(name: str, metric: cloudwatch.IMetric, description: str, **kwargs) -> None:
            created = cloudwatch.Alarm(
                self,
                name,
                metric=metric,
                alarm_description=description,
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                **kwargs,
            )
            created.add_alarm_action(actions.SnsAction(self.alarm_topic))
            self.alarms[name] = created

        alarm(
            "RunsFailed",
            state_machine.metric_failed(period=FIVE_MINUTES, statistic="Sum"),
            "A DreamBooth run failed (its owner got the failure notification; check the execution).",
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        )
        alarm(
            "UploadEventsInDeadLetterQueue",
            dead_letter_queue.metric_approximate_number_of_messages_visible(
                period=FIVE_MINUTES, statistic="Maximum"
            ),
            "Upload events failed intake 5 times and wait in the dead-letter queue: "
            "those uploads started no run.",
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        )
        failed = self.count("TrainingJobsFailed", FAILURE_RATE_WINDOW)
        succeeded = self.count("RunsSucceeded", FAILURE_RATE_WINDOW)
        self.failure_rate = cloudwatch.MathExpression(
            expression="IF(failed + succeeded > 0, 100 * failed / (failed + succeeded), 0)",
            using_metrics={"failed": failed, "succeeded": succeeded},
            label="Training job failure rate (%)",
            period=FAILURE_RATE_WINDOW,
        )
        alarm(
            "TrainingFailureRate",
            self.failure_rate,
            f"At least {FAILURE_RATE_PERCENT}% of the runs that trained in the last "
            f"{FAILURE_RATE_WINDOW.to_hours()} hours ended with the training job failed or stopped.",
            threshold=FAILURE_RATE_PERCENT,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        )
        alarm(
            "RunStuck",
            cloudwatch.MathExpression(
                expression="train + runs + steps",
                using_metrics={
                    "train": integration("ServiceIntegrationsTimedOut"),
                    "runs": state_machine.metric_timed_out(period=FIVE_MINUTES, statistic="Sum"),
                    "steps": self.count("RunsTimedOut", FIVE_MINUTES),
                },
                label="Runs stuck past their limit",
                period=FIVE_MINUTES,
            ),
            "A run's step outlived its TimeoutSeconds (for training: the longest max runtime plus spot "
            "wait): the run was stuck; check the SageMaker job and the execution.",
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        )

        self.dashboard = self._dashboard(state_machine, upload_queue, dead_letter_queue, integration)

    def _alarm_topic(
        self, notification_topic: sns.ITopic, key: kms.IKey, email: str | None, topic_arn: str | None
    ) -> sns.ITopic:
        if topic_arn:
            # Yours: its policy (and key, if encrypted) must let CloudWatch publish.
            return sns.Topic.from_topic_arn(self, "AlarmTopic", topic_arn)
        topic = notification_topic
        if email:
            topic = sns.Topic(
                self, "OpsAlarms", display_name="DreamBooth service alarms", master_key=key, enforce_ssl=True
            )
            topic.add_subscription(subscriptions.EmailSubscription(email))
        # CloudWatch publishes alarm notifications to the encrypted topic: it needs the key for that.
        key.grant(iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*")
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["sns:Publish"],
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                resources=[topic.topic_arn],
                conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
            )
        )
        return topic

    def _metric_filters(self, finish_run_logs: logs.ILogGroup) -> None:
        finished = f'$.message = "{run_metrics.LOG_MESSAGE}"'
        kind = f"$.{run_metrics.FAILURE_KIND}"
        counts = {
            "RunsSucceeded": f'$.{run_metrics.STATUS} = "{SUCCEEDED}"',
            # The job ran and failed or was stopped: what the training failure rate counts.
            "TrainingJobsFailed": (
                f'{kind} = "{failures.TRAINING_FAILED}" || {kind} = "{failures.TRAINING_STOPPED}"'
            ),
            "RunsTimedOut": f'{kind} = "{failures.TIMED_OUT}"',
        }
        for name, condition in counts.items():
            logs.MetricFilter(
                self,
                f"{name}Filter",
                log_group=finish_run_logs,
                metric_namespace=self.namespace,
                metric_name=name,
                filter_pattern=logs.FilterPattern.literal(f"{{ ({finished}) && ({condition}) }}"),
                metric_value="1",
                unit=cloudwatch.Unit.COUNT,
            )
        for name, field in [
            ("TrainingSeconds", run_metrics.TRAINING_SECONDS),
            ("BillableSeconds", run_metrics.BILLABLE_SECONDS),
        ]:
            logs.MetricFilter(
                self,
                f"{name}Filter",
                log_group=finish_run_logs,
                metric_namespace=self.namespace,
                metric_name=name,
                filter_pattern=logs.FilterPattern.literal(f"{{ ({finished}) && ($.{field} >= 0) }}"),
                metric_value=f"$.{field}",
                unit=cloudwatch.Unit.SECONDS,
            )

    def count(self, name: str, period: Duration) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=self.namespace,
            metric_name=name,
            statistic="Sum",
            period=period,
            unit=cloudwatch.Unit.COUNT,
        )

    def metric(self, name: str, period: Duration = DAY) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=self.namespace,
            metric_name=name,
            statistic="Sum",
            period=period,
            unit=cloudwatch.Unit.SECONDS,
        )

    def _dashboard(self, state_machine, upload_queue, dead_letter_queue, integration) -> cloudwatch.Dashboard:
        runs = [
            state_machine.metric_started(period=DAY, statistic="Sum", label="started"),
            state_machine.metric_succeeded(period=DAY, statistic="Sum", label="succeeded"),
            state_machine.metric_failed(period=DAY, statistic="Sum", label="failed"),
            state_machine.metric_aborted(period=DAY, statistic="Sum", label="aborted"),
            state_machine.metric_timed_out(period=DAY, statistic="Sum", label="timed out"),
        ]
        training, billable = self.metric("TrainingSeconds"), self.metric("BillableSeconds")
        minutes = [
            cloudwatch.MathExpression(
                expression="training / 60",
                using_metrics={"training": training},
                label="training minutes",
                period=DAY,
            ),
            cloudwatch.MathExpression(
                expression="billable / 60",
                using_metrics={"billable": billable},
                label="billable minutes",
                period=DAY,
            ),
        ]
        savings = cloudwatch.MathExpression(
            # Managed spot bills BillableTimeInSeconds of TrainingTimeInSeconds: the rest is the saving.
            expression="IF(training > 0, 100 * (training - billable) / training, 0)",
            using_metrics={"training": training, "billable": billable},
            label="spot savings (%)",
            period=DAY,
        )
        queues = [
            upload_queue.metric_approximate_number_of_messages_visible(label="upload events waiting"),
            upload_queue.metric_approximate_number_of_messages_not_visible(label="upload events in intake"),
            dead_letter_queue.metric_approximate_number_of_messages_visible(label="dead-letter queue"),
        ]
        dashboard = cloudwatch.Dashboard(self, "Dashboard", default_interval=Duration.days(14))
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Runs by status (per day)", left=runs, width=12),
            cloudwatch.GraphWidget(title="Upload queue depth", left=queues, width=12),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Training and billable minutes (per day)", left=minutes, width=8),
            cloudwatch.GraphWidget(
                title="Spot savings (%, per day)",
                left=[savings],
                left_y_axis=cloudwatch.YAxisProps(min=0, max=100),
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Training jobs (SageMaker via Step Functions)",
                left=[
                    integration("ServiceIntegrationsSucceeded", DAY),
                    integration("ServiceIntegrationsFailed", DAY),
                    integration("ServiceIntegrationsTimedOut", DAY),
                ],
                right=[self.failure_rate],
                width=8,
            ),
        )
        dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms.values()), width=24)
        )
        return dashboard

    @property
    def dashboard_url(self) -> str:
        return (
            f"https://{Aws.REGION}.console.aws.amazon.com/cloudwatch/home?region={Aws.REGION}"
            f"#dashboards:name={self.dashboard.dashboard_name}"
        )
