"""Saves the prefect-aws blocks for AWS Batch and S3 results: an `AwsCredentials` and an `S3Bucket` that uses it.

    python blocks/aws.py --credentials aws-prod --bucket results-prod --bucket-name my-results --folder granary
    export GRANARY_AWS_CREDENTIALS_BLOCK=aws-prod   # Batch, CloudWatch Logs and S3 calls use it
    export GRANARY_RESULTS_BLOCK=results-prod       # results go to s3://my-results/granary

Keys come from --access-key-id/--secret-access-key or, when omitted, are left to boto3's chain (instance or task
role, profile, environment): on AWS, prefer the role. --endpoint-url points every client at moto, LocalStack or an
on-premises S3.
"""

import argparse

from prefect_aws import AwsCredentials, S3Bucket


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--credentials", required=True, help="name of the AwsCredentials block")
    parser.add_argument("--bucket", help="name of the S3Bucket block (results root); none when omitted")
    parser.add_argument("--bucket-name", help="the S3 bucket")
    parser.add_argument("--folder", default="", help="prefix of the results root inside the bucket")
    parser.add_argument("--region", default=None)
    parser.add_argument("--endpoint-url", default=None)
    parser.add_argument("--access-key-id", default=None)
    parser.add_argument("--secret-access-key", default=None)
    args = parser.parse_args()

    credentials = AwsCredentials(
        aws_access_key_id=args.access_key_id,
        aws_secret_access_key=args.secret_access_key,
        region_name=args.region,
        aws_client_parameters={"endpoint_url": args.endpoint_url},
    )
    credentials.save(args.credentials, overwrite=True)
    where = f" -> {args.endpoint_url}" if args.endpoint_url else ""
    print(f"saved AwsCredentials block {args.credentials!r}{where}")
    if args.bucket:
        if not args.bucket_name:
            parser.error("--bucket needs --bucket-name")
        S3Bucket(bucket_name=args.bucket_name, bucket_folder=args.folder, credentials=credentials).save(
            args.bucket, overwrite=True
        )
        print(f"saved S3Bucket block {args.bucket!r} -> s3://{args.bucket_name}/{args.folder}".rstrip("/"))


if __name__ == "__main__":
    main()
