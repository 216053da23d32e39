"""A report site in an S3-compatible bucket (AWS S3, MinIO, Cloudflare R2, …), through boto3.

Immutability and concurrency rest on S3's conditional writes:
- every published file is created with ``If-None-Match: *``: the bucket itself refuses to replace
  it (412 PreconditionFailed), and an existing object is compared byte for byte;
- the manifest is the commit point, written with ``If-Match: <ETag read>`` (``If-None-Match: *``
  for the first one): a job that lost a race gets 412 and re-reads, re-plans and retries;
- ``index.html`` follows the manifest with its own ``If-Match`` chain, and is written only while
  the manifest is still this job's, so the index never goes back to an older manifest.
pyarrow.fs.S3FileSystem cannot send conditional headers, hence boto3 (an extra of the package).

Endpoint: the `s3-endpoint-url` input, else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``;
credentials and region: boto3's standard chain (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION``, profiles, instance roles). Messages never carry a secret.
"""

from __future__ import annotations

from collections.abc import Mapping

from mlobs.errors import ConfigError
from mlobs.report.stores import (
    INDEX,
    MANIFEST,
    Changes,
    StoreConflict,
    StoreRefused,
    StoreUnavailable,
    check_path,
)

_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json",
                  ".svg": "image/svg+xml", ".css": "text/css", ".js": "text/javascript",
                  ".xml": "application/xml", ".txt": "text/plain; charset=utf-8"}
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_IMMUTABLE = "public, max-age=31536000, immutable"
_FRESH = "no-cache"


def endpoint_from(explicit: str | None, env: Mapping[str, str]) -> str | None:
    return (explicit or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or "").strip() or None


def region_from(env: Mapping[str, str]) -> str:
    return (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1").strip()


class S3Snapshot:
    def __init__(self, store: S3Store) -> None:
        self._store = store
        self._cache: dict[str, tuple[bytes | None, str | None]] = {}
        self.manifest, self.manifest_etag = store.get(MANIFEST)
        self._cache[MANIFEST] = (self.manifest, self.manifest_etag)

    def read(self, path: str) -> bytes | None:
        if path not in self._cache:
            self._cache[path] = self._store.get(check_path(path))
        return self._cache[path][0]

    def list(self, prefix: str) -> list[str]:
        return self._store.list(prefix)


class S3Store:
    kind = "s3"

    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        env = env or {}
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:  # pragma: no cover - the evaluate extra installs it
            raise ConfigError("publish-to s3:// needs boto3: pip install boto3") from exc
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint = endpoint_from(endpoint, env)
        self.display = f"s3://{bucket}/{self.prefix}".rstrip("/")
        config = Config(retries={"max_attempts": 5, "mode": "standard"},
                        s3={"addressing_style": "path"} if self.endpoint else {})
        # Keys from the given environment when it has them, else boto3's own chain (profiles, roles).
        keys = {name.lower(): env[name] for name in
                ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN") if env.get(name)}
        self.client = boto3.session.Session(**keys).client(
            "s3", endpoint_url=self.endpoint, region_name=region_from(env), config=config)

    def key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    # -- reads ---------------------------------------------------------------------------------
    def get(self, path: str) -> tuple[bytes | None, str | None]:
        try:
            answer = self._call("get_object", Bucket=self.bucket, Key=self.key(path))
        except _Missing:
            return None, None
        return answer["Body"].read(), answer.get("ETag")

    def list(self, prefix: str) -> list[str]:
        found, token = [], None
        base = self.key("")
        while True:
            kwargs = {"Bucket": self.bucket, "Prefix": self.key(prefix)}
            if token:
                kwargs["ContinuationToken"] = token
            answer = self._call("list_objects_v2", **kwargs)
            found += [item["Key"][len(base):] for item in answer.get("Contents", [])]
            if not answer.get("IsTruncated"):
                return sorted(found)
            token = answer["NextContinuationToken"]

    def open(self) -> S3Snapshot:
        return S3Snapshot(self)

    # -- the commit ----------------------------------------------------------------------------
    def commit(self, snapshot: S3Snapshot, changes: Changes) -> None:
        current, etag = self.get(MANIFEST)
        if etag != snapshot.manifest_etag or current != snapshot.manifest:
            raise StoreConflict(f"{self.display}/{MANIFEST} changed since it was read")
        # Published files first, each created only if absent: the bucket refuses to overwrite.
        for path in sorted(changes.create, key=_claim_first):
            self._create(path, changes.create[path])
        for path in changes.delete:
            self._call("delete_object", Bucket=self.bucket, Key=self.key(check_path(path)))
        for path, body in changes.replace.items():
            self._put(path, body, _IMMUTABLE)
        # The manifest: the commit point, only over the version this plan was made from.
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            answer = self._put(MANIFEST, changes.manifest, _FRESH, **condition)
        except _Precondition:
            raise StoreConflict(f"{self.display}/{MANIFEST} changed during the commit") from None
        mine = answer.get("ETag")
        for path, body in changes.site.items():
            if path == INDEX:
                self._write_index(body, mine)
            else:
                self._put(path, body, _FRESH)

    def _create(self, path: str, body: bytes) -> None:
        try:
            self._put(path, body, _IMMUTABLE, IfNoneMatch="*")
        except _Precondition:
            existing, _ = self.get(path)
            if existing != body:
                # A version's first file (its report.json) is its claim: another job is publishing
                # the same version right now, or one died half-way. Re-read the manifest and retry.
                if path.endswith("/report.json"):
                    raise StoreConflict(f"{self.display}/{path} is being written by another "
                                        "publish") from None
                raise StoreRefused(f"{self.display}/{path} is already published with different "
                                   "content; published files are never rewritten") from None

    def _write_index(self, body: bytes, manifest_etag: str | None) -> None:
        """Write index.html while the manifest is still ours; a newer manifest's job writes its own."""
        for _ in range(20):
            _, index_etag = self.get(INDEX)
            _, now = self.get(MANIFEST)
            if now != manifest_etag:
                return  # a later publish owns the index now
            condition = {"IfMatch": index_etag} if index_etag else {"IfNoneMatch": "*"}
            try:
                self._put(INDEX, body, _FRESH, **condition)
                return
            except _Precondition:
                continue
        raise StoreUnavailable(f"{self.display}/{INDEX} kept changing; the manifest is published, "
                               "the next publish rewrites the index")

    def _put(self, path: str, body: bytes, cache: str, **condition: str) -> dict:
        suffix = "." + path.rsplit(".", 1)[-1] if "." in path.rsplit("/", 1)[-1] else ""
        return self._call("put_object", Bucket=self.bucket, Key=self.key(check_path(path)), Body=body,
                          ContentType=_CONTENT_TYPES.get(suffix, "application/octet-stream"),
                          CacheControl=cache, **condition)

    def _call(self, operation: str, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return getattr(self.client, operation)(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code in _PRECONDITION or status in ("412",):
                raise _Precondition() from None
            if code in ("NoSuchKey", "404") and operation == "get_object":
                raise _Missing() from None
            if code == "NoSuchBucket":
                raise ConfigError(f"bucket {self.bucket!r} does not exist at "
                                  f"{self.endpoint or 'AWS S3'}: create it first") from None
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                raise StoreUnavailable(f"{self.display}: access denied ({code}) — check the AWS "
                                       "credentials and the bucket policy") from None
            raise StoreUnavailable(f"{self.display}: {operation} failed: {code or status} "
                                   f"{error.get('Message', '')}".strip()) from None
        except NoCredentialsError:
            raise ConfigError("publish-to s3:// needs credentials: set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY (or a profile / role)") from None
        except BotoCoreError as exc:
            raise StoreUnavailable(f"{self.display}: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        self.client.close()


class _Precondition(Exception):
    pass


class _Missing(Exception):
    pass


def _claim_first(path: str) -> tuple:
    """report.json of each version first (the claim), then its pages; compare pages last."""
    return (path.startswith("compare/"), not path.endswith("/report.json"), path)
