"""Pushes FILE to TARGET (HOST:PORT/REPO:TAG, plain HTTP) with oras-py as one
layer of MEDIA_TYPE and a config of the CNCF wasm layout; prints the manifest
digest. Run by scripts/oras-push.sh, which installs oras."""

import json
import os
import sys
import tempfile

import oras.client


def main() -> None:
    path, target, media_type = sys.argv[1:4]
    client = oras.client.OrasClient(insecure=True)
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "config.json")
        with open(config, "w") as f:
            json.dump({"architecture": "wasm", "os": "wasip2"}, f)
        response = client.push(
            target=target,
            files=[f"{path}:{media_type}"],
            manifest_config=f"{config}:application/vnd.wasm.config.v0+json",
            disable_path_validation=True,
            quiet=True,
        )
    print(response.headers["Docker-Content-Digest"])


if __name__ == "__main__":
    main()
