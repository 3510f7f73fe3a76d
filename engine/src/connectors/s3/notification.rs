//! S3 event notifications as they arrive on an SQS queue: the S3 event JSON itself, the same
//! wrapped by SNS (`{"Type":"Notification","Message":"…"}`), or an EventBridge event.

use serde_json::Value;

/// An object that was created (or written again), as a notification names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub bucket: String,
    pub key: String,
}

/// What a message body says.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    /// Objects created; other events (deletions, `s3:TestEvent`) are left out.
    Created(Vec<Created>),
    /// Not a notification at all, with why.
    Foreign(String),
}

pub fn parse(body: &str) -> Notice {
    let v: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => return Notice::Foreign(format!("not JSON: {e}")),
    };
    // SNS wraps the S3 event as a string.
    if v.get("Type").and_then(Value::as_str) == Some("Notification")
        && let Some(inner) = v.get("Message").and_then(Value::as_str)
    {
        return parse(inner);
    }
    if v.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Notice::Created(Vec::new());
    }
    if let Some(records) = v.get("Records").and_then(Value::as_array) {
        let created = records
            .iter()
            .filter(|r| r.get("eventName").and_then(Value::as_str).is_some_and(|n| n.starts_with("ObjectCreated:")))
            .filter_map(|r| {
                let s3 = r.get("s3")?;
                let bucket = s3.get("bucket")?.get("name")?.as_str()?.to_string();
                // Keys come URL-encoded, spaces as `+`.
                let key = url_decode(s3.get("object")?.get("key")?.as_str()?)?;
                Some(Created { bucket, key })
            })
            .collect();
        return Notice::Created(created);
    }
    if v.get("source").and_then(Value::as_str) == Some("aws.s3") {
        if v.get("detail-type").and_then(Value::as_str) != Some("Object Created") {
            return Notice::Created(Vec::new());
        }
        let d = &v["detail"];
        return match (d["bucket"]["name"].as_str(), d["object"]["key"].as_str()) {
            (Some(b), Some(k)) => Notice::Created(vec![Created { bucket: b.to_string(), key: k.to_string() }]),
            _ => Notice::Foreign("an EventBridge S3 event without bucket or key".into()),
        };
    }
    Notice::Foreign("neither an S3 event notification nor an EventBridge S3 event".into())
}

/// `application/x-www-form-urlencoded` decoding, as S3 encodes keys in notifications.
fn url_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_events_sns_wrapped_and_eventbridge() {
        let s3 = r#"{"Records":[
            {"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"in/a+b%C3%A9%2B.json","size":3}}},
            {"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"b"},"object":{"key":"x"}}}]}"#;
        let want = Notice::Created(vec![Created { bucket: "b".into(), key: "in/a bé+.json".into() }]);
        assert_eq!(parse(s3), want);
        let sns = serde_json::json!({"Type": "Notification", "Message": s3}).to_string();
        assert_eq!(parse(&sns), want);
        assert_eq!(parse(r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#), Notice::Created(vec![]));
        let eb = r#"{"source":"aws.s3","detail-type":"Object Created","detail":{"bucket":{"name":"b"},"object":{"key":"k 1"}}}"#;
        assert_eq!(parse(eb), Notice::Created(vec![Created { bucket: "b".into(), key: "k 1".into() }]));
        assert!(matches!(parse("{\"id\":1}"), Notice::Foreign(_)));
        assert!(matches!(parse("nope"), Notice::Foreign(_)));
    }
}
