"""Create what the Batch examples need: a job role, an unmanaged compute environment, a job queue, job definitions.

Production accounts manage these with Terraform or CloudFormation; this is the smallest set to try granary-flows on
an AWS stand-in (moto in server mode, LocalStack). It uses the same credentials as granary-flows
(`GRANARY_AWS_CREDENTIALS_BLOCK`, else boto3's chain and `AWS_ENDPOINT_URL`), and is safe to run again.

    python examples/batch/create_resources.py --container-endpoint http://127.0.0.1:5000
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from granary_flows import aws

ROLE = "granary-batch-job"
COMPUTE_ENVIRONMENT = "granary-compute"
QUEUE = "granary-queue"
NDVI_DEFINITION = {"name": "granary-ndvi", "image": "granary/ndvi:1", "command": ["python3", "/app/ndvi.py"]}


def ensure_queue(queue: str = QUEUE) -> str:
    """The job queue (and its role and compute environment), created if missing. Returns its ARN."""
    iam, batch = aws.client("iam"), aws.client("batch")
    try:
        role_arn = iam.get_role(RoleName=ROLE)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "batch.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        }
        role_arn = iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    environments = batch.describe_compute_environments(computeEnvironments=[COMPUTE_ENVIRONMENT])["computeEnvironments"]
    if environments:
        environment_arn = environments[0]["computeEnvironmentArn"]
    else:
        environment_arn = batch.create_compute_environment(
            computeEnvironmentName=COMPUTE_ENVIRONMENT, type="UNMANAGED", state="ENABLED", serviceRole=role_arn
        )["computeEnvironmentArn"]
    queues = batch.describe_job_queues(jobQueues=[queue])["jobQueues"]
    if queues:
        return str(queues[0]["jobQueueArn"])
    return str(
        batch.create_job_queue(
            jobQueueName=queue,
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment_arn}],
        )["jobQueueArn"]
    )


def register_definition(
    name: str,
    image: str,
    command: list[str],
    environment: dict[str, str] | None = None,
    mounts: dict[str, str] | None = None,
) -> str:
    """Register a container job definition (a new revision each time). Returns its ARN.

    Args:
        environment: variables every job of it gets, e.g. where a stand-in's S3 answers.
        mounts: host folder -> container folder, read-only.
    """
    properties: dict[str, Any] = {
        "image": image,
        "command": command,
        "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
        "environment": [{"name": k, "value": v} for k, v in (environment or {}).items()],
    }
    if mounts:
        volumes = {f"volume-{i}": (host, inside) for i, (host, inside) in enumerate(mounts.items())}
        properties["volumes"] = [{"name": v, "host": {"sourcePath": host}} for v, (host, _) in volumes.items()]
        properties["mountPoints"] = [
            {"sourceVolume": v, "containerPath": inside, "readOnly": True} for v, (_, inside) in volumes.items()
        ]
    response = aws.client("batch").register_job_definition(
        jobDefinitionName=name, type="container", containerProperties=properties
    )
    return str(response["jobDefinitionArn"])


def stand_in_environment(endpoint: str) -> dict[str, str]:
    """What a job needs to reach a stand-in's S3 (real Batch jobs use their job role and AWS's own endpoints)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queue", default=QUEUE)
    parser.add_argument(
        "--container-endpoint", help="the S3 endpoint as the job's container sees it (a stand-in); omit on AWS"
    )
    args = parser.parse_args()
    print("job queue:", ensure_queue(args.queue))
    environment = stand_in_environment(args.container_endpoint) if args.container_endpoint else {}
    print("job definition:", register_definition(**NDVI_DEFINITION, environment=environment))


if __name__ == "__main__":
    main()
