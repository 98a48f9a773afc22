"""ECS calls with boto3 against a warden's loopback API, for tests/it/api_cli.rs.

    python3 ecs_calls.py ENDPOINT REGION CASES_JSON

CASES_JSON is a list of {"op": "update_container_agent", "params": {...},
"expect": "NoUpdateAvailableException"?}. Each case is one call, in order;
one JSON line per case on stdout:

- {"ok": true, "response": {...}} when the call succeeded;
- {"ok": false, "caught": NAME, ...} when it raised the modeled exception
  `client.exceptions.<expect>` (caught by that class, not by its code);
- {"ok": false, "caught": null, "class": ..., "code": ...} for any other
  ClientError.

Credentials come from AWS_SHARED_CREDENTIALS_FILE (the host's key pair);
no retries, so every call is sent exactly once.
"""

import json
import sys

import boto3
import botocore
from botocore.config import Config


def main():
    endpoint, region, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    client = boto3.session.Session().client(
        "ecs",
        region_name=region,
        endpoint_url=endpoint,
        config=Config(retries={"total_max_attempts": 1}),
    )
    for case in cases:
        expect = case.get("expect")
        modeled = getattr(client.exceptions, expect) if expect else ()
        call = getattr(client, case["op"])
        try:
            r = call(**case.get("params", {}))
            r.pop("ResponseMetadata", None)
            out = {"ok": True, "response": r}
        except modeled as e:
            out = {
                "ok": False,
                "caught": expect,
                "class": type(e).__name__,
                "code": e.response["Error"]["Code"],
                "message": e.response["Error"]["Message"],
                "status": e.response["ResponseMetadata"]["HTTPStatusCode"],
            }
        except botocore.exceptions.ClientError as e:
            out = {
                "ok": False,
                "caught": None,
                "class": type(e).__name__,
                "code": e.response["Error"]["Code"],
                "message": e.response["Error"]["Message"],
                "status": e.response["ResponseMetadata"]["HTTPStatusCode"],
            }
        print(json.dumps(out, default=str), flush=True)


if __name__ == "__main__":
    main()
