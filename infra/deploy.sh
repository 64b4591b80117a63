#!/usr/bin/env bash
# `make deploy`: build and deploy the MailMatrix SAM stack; on the first deploy, put the bundled
# (demo) templates/ in the bucket.
#
# The first run (no infra/samconfig.toml with a stack name yet) is guided: sam asks for the
# stack name, region, sender address and identity, and saves the answers to samconfig.toml.
set -euo pipefail
cd "${0%/*}"
export MAILMATRIX_ROOT="$(cd .. && pwd)"

# Only shell builtins until here, so the check works on any PATH.
if ! command -v sam >/dev/null 2>&1; then
    {
        echo "deploy: the AWS SAM CLI is not installed (it is not among the dev dependencies)."
        echo "Install it with one of:"
        echo "  pipx install aws-sam-cli"
        echo "  python3 -m pip install --user aws-sam-cli"
        echo "  https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/install-sam-cli.html"
        echo "then configure AWS credentials (aws configure, or AWS_PROFILE) and run 'make deploy' again."
    } >&2
    exit 2
fi
if ! command -v aws >/dev/null 2>&1; then
    echo "deploy: the AWS CLI is needed to sync templates/ to the bucket (pipx install awscli)." >&2
    exit 2
fi

# The state machine is named mailmatrix-STACK, and Step Functions takes 80 characters at most:
# a longer stack name would fail (and roll back) the deploy at the state machine.
longest=69
stack="$(sed -n 's/^stack_name *= *"\(.*\)"/\1/p' samconfig.toml 2>/dev/null | head -n 1)"
if [ "${#stack}" -gt "$longest" ]; then
    {
        echo "deploy: the stack name in samconfig.toml is ${#stack} characters long: at most"
        echo "$longest are taken (the state machine is named mailmatrix-STACK, 80 characters at"
        echo "most). Nothing was built or deployed: give the stack a shorter name (stack_name)."
    } >&2
    exit 2
fi

# The layer is built by pip for arm64 / CPython 3.12 (infra/layer/Makefile); no Docker.
sam build --template-file template.yaml

if grep -q '^stack_name' samconfig.toml 2>/dev/null; then
    sam deploy
else
    echo "deploy: name the stack with at most $longest characters (its state machine is mailmatrix-STACK)."
    sam deploy --guided
fi

# Operators change templates without redeploying code: they live in the bucket.
stack="$(sed -n 's/^stack_name *= *"\(.*\)"/\1/p' samconfig.toml | head -n 1)"
region="$(sed -n 's/^region *= *"\(.*\)"/\1/p' samconfig.toml | head -n 1)"
bucket="$(aws cloudformation describe-stacks --stack-name "$stack" ${region:+--region "$region"} \
    --query "Stacks[0].Outputs[?OutputKey=='BucketName'].OutputValue" --output text)"
# The bundled templates are the demo's (demo: true: refused for real recipients): put there on
# the first deploy only, so a redeploy never replaces the operator's own letters with them.
held="$(aws s3api list-objects-v2 --bucket "$bucket" --prefix templates/ --max-keys 1 \
    --query KeyCount --output text ${region:+--region "$region"})"
own="aws s3 sync YOUR-TEMPLATES-FOLDER/ s3://$bucket/templates/ --delete"
if [ "$held" != "0" ]; then
    echo "deployed stack $stack; the templates in s3://$bucket/templates/ are left as they are"
    echo "(to replace them with your own: $own)"
else
    aws s3 sync ../templates/ "s3://$bucket/templates/" --delete ${region:+--region "$region"}
    echo "deployed stack $stack; the bundled demo templates were put in s3://$bucket/templates/:"
    echo "upload your own before the first send: $own"
fi
