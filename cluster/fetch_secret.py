"""Print a secret from the cloud's secret manager, for a node's start command.

    export OPENAI_API_KEY="$(python cluster/fetch_secret.py aws:sg4v/openai-api-key)"
    export OPENAI_API_KEY="$(python cluster/fetch_secret.py gcp:sg4v-openai-api-key)"

Used by cluster/aws.yaml and cluster/gcp.yaml so that the API key is read on the node, with
the node's own cloud identity, and never written into a config file, a job's runtime
environment or the Ray dashboard. ``aws:`` takes a Secrets Manager name or ARN (region from
the ARN, else the node's region); ``gcp:`` takes a Secret Manager secret name in the node's
project, or a full ``projects/P/secrets/S[/versions/V]`` path. Exits non-zero with a message
on stderr when the secret cannot be read; an empty variable then makes the API stage fail at
its first call with a clear error instead of silently.
"""

from __future__ import annotations

import base64
import sys


def aws_secret(secret_id: str) -> str:
    import botocore.session

    session = botocore.session.get_session()
    region = secret_id.split(":")[3] if secret_id.startswith("arn:") else None
    client = session.create_client("secretsmanager", region_name=region)
    return client.get_secret_value(SecretId=secret_id)["SecretString"]


def gcp_secret(name: str) -> str:
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, project = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    if not name.startswith("projects/"):
        name = f"projects/{project}/secrets/{name}"
    if "/versions/" not in name:
        name += "/versions/latest"
    response = AuthorizedSession(credentials).get(
        f"https://secretmanager.googleapis.com/v1/{name}:access", timeout=30)
    response.raise_for_status()
    return base64.b64decode(response.json()["payload"]["data"]).decode()


def main(argv: list[str]) -> int:
    if len(argv) != 1 or ":" not in argv[0]:
        print("usage: fetch_secret.py aws:NAME_OR_ARN | gcp:NAME_OR_PATH", file=sys.stderr)
        return 2
    cloud, name = argv[0].split(":", 1)
    readers = {"aws": aws_secret, "gcp": gcp_secret}
    if cloud not in readers:
        print(f"fetch_secret.py: unknown cloud {cloud!r}; use aws: or gcp:", file=sys.stderr)
        return 2
    try:
        value = readers[cloud](name)
    except Exception as exc:  # any failure: say which secret, never print a partial value
        print(f"fetch_secret.py: cannot read {argv[0]}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(value.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
