#!/usr/bin/env python3
"""Independent clients for Phoenix's integration tests: confluent-kafka for Kafka, boto3 for
SQS. Nothing here shares code with Phoenix, so a test that writes with Phoenix and reads here
(or the other way round) checks the real wire behaviour.

  clients.py kafka-produce BROKERS TOPIC PARTITIONS [START] < payloads
                                      (line i, counted from START, -> partition i % PARTITIONS, key "k<i>")
  clients.py kafka-read BROKERS TOPIC PARTITIONS COUNT SECONDS [IDLE]
                                      (JSON lines: partition, offset, key, value, headers; stops after
                                       COUNT messages, SECONDS, or IDLE seconds without a message)
  clients.py kafka-committed BROKERS GROUP TOPIC PARTITIONS      (JSON list, null where nothing is committed)
  clients.py kafka-topics BROKERS                                (JSON object: topic -> partitions)
  clients.py sqs-create ENDPOINT NAME [fifo]                     (prints the queue URL)
  clients.py sqs-send ENDPOINT URL < payloads                    (SendMessageBatch in tens)
  clients.py sqs-receive ENDPOINT URL COUNT SECONDS              (receives and deletes; JSON lines)
  clients.py sqs-count ENDPOINT URL                              (visible + in flight, JSON)
  clients.py s3-bucket ENDPOINT BUCKET [QUEUE_URL]               (create; with a queue, notify it of new objects)
  clients.py s3-put ENDPOINT BUCKET KEY [ENCODING] < bytes       (PutObject; ENCODING sets Content-Encoding)
  clients.py s3-big-array ENDPOINT BUCKET KEY COUNT PAD          (a JSON array of COUNT events, generated and
                                      uploaded in parts as it is made; prints its size)
  clients.py s3-list ENDPOINT BUCKET [PREFIX]                    (JSON lines: key, size, etag, content_encoding)
  clients.py s3-etags ENDPOINT BUCKET                            (JSON object: key -> ETag, from the listing alone)
  clients.py s3-get ENDPOINT BUCKET KEY                          (the object's bytes, gunzipped if its
                                      Content-Encoding is gzip)
  clients.py s3-cat ENDPOINT BUCKET [PREFIX]                     (JSON lines: key, body (gunzipped) of every object)
  clients.py s3-deny-user ENDPOINT BUCKET KEY [PREFIX]           (an IAM user allowed everything on BUCKET but
                                      GetObject of KEY, and PutObject under PREFIX if given; prints its
                                      access key as JSON: id, secret)
  clients.py auth-on ENDPOINT                                    (moto with INITIAL_NO_AUTH_ACTION_COUNT: spends
                                      the requests left unchecked until one is refused; prints how many)
  clients.py s3-download ENDPOINT BUCKET PREFIX                  (lists and downloads every object, 4 at
                                      once; JSON: objects, lines, bytes, seconds)

Every address is 127.0.0.1; AWS credentials are fake and come from the environment.
"""
import json
import sys
import time


def kafka_produce(brokers, topic, partitions, start="0"):
    from confluent_kafka import Producer

    # One message per record batch: tansu 0.6 answers a fetch from an offset inside a batch with
    # the batches after it, skipping the rest of that batch, so consumers that resume mid-batch
    # (after a pause, a restart or a rebalance) would lose messages to the broker, not to Phoenix.
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 0, "batch.num.messages": 1})
    failed = []

    def report(err, _msg):
        if err is not None:
            failed.append(err)

    for i, line in enumerate(sys.stdin.buffer, int(start)):
        payload = line.rstrip(b"\n")
        while True:
            try:
                p.produce(topic, value=payload, key=f"k{i}", partition=i % int(partitions), on_delivery=report)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(60)
    if left or failed:
        sys.exit(f"{left} undelivered, {len(failed)} failed: {failed[:3]}")


def kafka_read(brokers, topic, partitions, count, seconds, idle="0"):
    from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING

    c = Consumer({"bootstrap.servers": brokers, "group.id": "phoenix-test-reader", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(int(partitions))])
    deadline = time.time() + float(seconds)
    last = time.time()
    n = 0
    while n < int(count) and time.time() < deadline:
        m = c.poll(0.2)
        if m is None:
            if float(idle) > 0 and n > 0 and time.time() - last > float(idle):
                break
            continue
        last = time.time()
        if m.error():
            print(f"kafka-read: {m.error()}", file=sys.stderr)
            continue
        n += 1
        headers = {k: (v.decode("utf-8", "replace") if v is not None else None) for k, v in (m.headers() or [])}
        print(json.dumps({
            "partition": m.partition(),
            "offset": m.offset(),
            "key": m.key().decode("utf-8", "replace") if m.key() is not None else None,
            "value": (m.value() or b"").decode("utf-8", "replace"),
            "headers": headers,
        }))
    c.close()


def kafka_committed(brokers, group, topic, partitions):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": False})
    got = c.committed([TopicPartition(topic, p) for p in range(int(partitions))], timeout=30)
    print(json.dumps([tp.offset if tp.offset >= 0 else None for tp in got]))
    c.close()


def kafka_topics(brokers):
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": brokers}).list_topics(timeout=30)
    print(json.dumps({t: len(m.partitions) for t, m in md.topics.items() if not t.startswith("__")}))


def sqs(endpoint):
    import boto3

    return boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")


def sqs_create(endpoint, name, kind=""):
    attrs = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if kind == "fifo" else {}
    print(sqs(endpoint).create_queue(QueueName=name, Attributes=attrs)["QueueUrl"])


def sqs_send(endpoint, url):
    client = sqs(endpoint)
    lines = [l.rstrip(b"\n").decode() for l in sys.stdin.buffer]
    for start in range(0, len(lines), 10):
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(lines[start:start + 10])]
        while entries:
            r = client.send_message_batch(QueueUrl=url, Entries=entries)
            failed = {f["Id"] for f in r.get("Failed", [])}
            entries = [e for e in entries if e["Id"] in failed]


def sqs_receive(endpoint, url, count, seconds):
    client = sqs(endpoint)
    deadline = time.time() + float(seconds)
    n = 0
    while n < int(count) and time.time() < deadline:
        r = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                   MessageSystemAttributeNames=["All"])
        msgs = r.get("Messages", [])
        for m in msgs:
            print(json.dumps({"body": m["Body"], "attributes": m.get("Attributes", {})}))
        n += len(msgs)
        if msgs:
            client.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)])


def sqs_count(endpoint, url):
    a = sqs(endpoint).get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    print(json.dumps({"visible": int(a["ApproximateNumberOfMessages"]),
                      "in_flight": int(a["ApproximateNumberOfMessagesNotVisible"])}))


def s3(endpoint):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}))


def s3_bucket(endpoint, bucket, queue_url=""):
    client = s3(endpoint)
    client.create_bucket(Bucket=bucket)
    if queue_url:
        arn = sqs(endpoint).get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        client.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})


def s3_put(endpoint, bucket, key, encoding=""):
    extra = {"ContentEncoding": encoding} if encoding else {}
    s3(endpoint).put_object(Bucket=bucket, Key=key, Body=sys.stdin.buffer.read(), **extra)


def s3_big_array(endpoint, bucket, key, count, pad):
    client = s3(endpoint)
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts, buf, size, number = [], [b"["], 0, 1
    filler = "x" * int(pad)

    def flush(last=False):
        nonlocal buf, number, size
        data = b"".join(buf)
        if not data or (len(data) < 8 << 20 and not last):
            return
        r = client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=data)
        parts.append({"ETag": r["ETag"], "PartNumber": number})
        size += len(data)
        number, buf = number + 1, []

    for i in range(int(count)):
        sep = b"," if i else b""
        buf.append(sep + json.dumps({"id": i, "kind": "a", "pad": filler}).encode() + b"\n")
        if len(buf) % 1000 == 0:
            flush()
    buf.append(b"]")
    flush(last=True)
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
    print(size)


def s3_list(endpoint, bucket, prefix=""):
    client = s3(endpoint)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            head = client.head_object(Bucket=bucket, Key=o["Key"])
            print(json.dumps({"key": o["Key"], "size": o["Size"], "etag": o["ETag"].strip('"'),
                              "content_encoding": head.get("ContentEncoding")}))


def s3_etags(endpoint, bucket):
    # No HeadObject per key (unlike s3-list): credentials that may not read an object may list it.
    client = s3(endpoint)
    print(json.dumps({o["Key"]: o["ETag"].strip('"')
                      for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                      for o in page.get("Contents", [])}))


def s3_get(endpoint, bucket, key):
    import gzip

    r = s3(endpoint).get_object(Bucket=bucket, Key=key)
    data = r["Body"].read()
    if r.get("ContentEncoding") == "gzip":
        data = gzip.decompress(data)
    sys.stdout.buffer.write(data)


def s3_cat(endpoint, bucket, prefix=""):
    # One process for a whole bucket: a test polling an archive of many objects would otherwise
    # start Python (and boto3) once per object.
    import gzip

    client = s3(endpoint)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            r = client.get_object(Bucket=bucket, Key=o["Key"])
            data = r["Body"].read()
            if r.get("ContentEncoding") == "gzip":
                data = gzip.decompress(data)
            print(json.dumps({"key": o["Key"], "body": data.decode("utf-8", "replace")}))


def s3_deny_user(endpoint, bucket, key, put_prefix=None):
    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
    iam.create_user(UserName="phoenix-reader")
    statements = [
        {"Effect": "Allow", "Action": "s3:*", "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]},
        {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/{key}"},
    ]
    if put_prefix is not None:
        # moto checks only the destination of a CopyObject (PutObject), where AWS also wants
        # GetObject on the source: denying the destination refuses the copy as AWS would.
        statements.append({"Effect": "Deny", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/{put_prefix}*"})
    iam.put_user_policy(UserName="phoenix-reader", PolicyName="all-but-one", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": statements}))
    k = iam.create_access_key(UserName="phoenix-reader")["AccessKey"]
    print(json.dumps({"id": k["AccessKeyId"], "secret": k["SecretAccessKey"]}))


def auth_on(endpoint):
    import boto3
    from botocore.config import Config

    # Unknown credentials: refused as soon as moto checks requests at all.
    nobody = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="nobody",
                          aws_secret_access_key="nobody", config=Config(s3={"addressing_style": "path"}))
    for spent in range(1000):
        try:
            nobody.list_buckets()
        except Exception:
            print(spent)
            return
    sys.exit("moto never started checking requests: is INITIAL_NO_AUTH_ACTION_COUNT set?")


def s3_download(endpoint, bucket, prefix):
    # What `phoenix bench --source s3` times as its plain download, in boto3: list, then read
    # every object to its end, 4 at once (the `s3` source's default concurrency).
    from concurrent.futures import ThreadPoolExecutor

    client = s3(endpoint)
    started = time.monotonic()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]

    def read(key):
        data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return data.count(b"\n"), len(data)

    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(read, keys))
    seconds = time.monotonic() - started
    print(json.dumps({"objects": len(keys), "lines": sum(n for n, _ in done), "bytes": sum(b for _, b in done),
                      "seconds": seconds}))


COMMANDS = {
    "kafka-produce": kafka_produce,
    "kafka-read": kafka_read,
    "kafka-committed": kafka_committed,
    "kafka-topics": kafka_topics,
    "sqs-create": sqs_create,
    "sqs-send": sqs_send,
    "sqs-receive": sqs_receive,
    "sqs-count": sqs_count,
    "s3-bucket": s3_bucket,
    "s3-put": s3_put,
    "s3-big-array": s3_big_array,
    "s3-list": s3_list,
    "s3-etags": s3_etags,
    "s3-get": s3_get,
    "s3-cat": s3_cat,
    "s3-deny-user": s3_deny_user,
    "auth-on": auth_on,
    "s3-download": s3_download,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
