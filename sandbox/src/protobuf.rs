//! Decoding of the Kubernetes protobuf encoding for the few built-in kinds kubectl creates
//! imperatively (`kubectl create namespace|configmap|secret|serviceaccount`), which send
//! `application/vnd.kubernetes.protobuf` bodies.
//!
//! Written by hand because no Rust crate carries the generated Kubernetes protobuf types
//! (k8s-openapi is JSON only), and these kinds need only the wire format and a handful of field
//! numbers from `k8s.io/api/core/v1/generated.proto`. Other kinds are refused with 415.

use serde_json::{Map, Value, json};

/// The four bytes before every Kubernetes protobuf object.
const MAGIC: &[u8] = b"k8s\x00";

/// Decodes a protobuf request body into the JSON object it encodes.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("protobuf body without the k8s envelope")?;
    // runtime.Unknown: typeMeta = 1, raw = 2.
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for field in Fields::new(envelope) {
        match field? {
            (1, Wire::Bytes(type_meta)) => {
                for f in Fields::new(type_meta) {
                    match f? {
                        (1, Wire::Bytes(b)) => api_version = text(b)?,
                        (2, Wire::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let mut object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => namespace(raw)?,
        ("v1", "ConfigMap") => config_map(raw)?,
        ("v1", "Secret") => secret(raw)?,
        ("v1", "ServiceAccount") => service_account(raw)?,
        // The authentication and authorization requests kubectl's typed clients send
        // (`create token`, `auth can-i`, `auth whoami`): their spec is all that matters.
        ("authentication.k8s.io/v1", "TokenRequest") => review(raw, TOKEN_REQUEST_SPEC)?,
        ("authentication.k8s.io/v1", "SelfSubjectReview") => review(raw, &[])?,
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => review(raw, ACCESS_REVIEW_SPEC)?,
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => review(raw, RULES_REVIEW_SPEC)?,
        _ => {
            return Err(format!(
                "protobuf is only decoded for v1 Namespace, ConfigMap, Secret and ServiceAccount, not {api_version} {kind}; send JSON or YAML"
            ));
        }
    };
    object.insert("apiVersion".into(), json!(api_version));
    object.insert("kind".into(), json!(kind));
    Ok(Value::Object(object))
}

/// How one protobuf field maps to JSON.
enum Field {
    Text(u64, &'static str),
    RepeatedText(u64, &'static str),
    Int(u64, &'static str),
    Message(u64, &'static str, &'static [Field]),
}

const BOUND_OBJECT_REF: &[Field] = &[
    Field::Text(1, "kind"),
    Field::Text(2, "apiVersion"),
    Field::Text(3, "name"),
    Field::Text(4, "uid"),
];
/// `authentication/v1 TokenRequestSpec`
const TOKEN_REQUEST_SPEC: &[Field] = &[
    Field::RepeatedText(1, "audiences"),
    Field::Message(3, "boundObjectRef", BOUND_OBJECT_REF),
    Field::Int(4, "expirationSeconds"),
];
const RESOURCE_ATTRIBUTES: &[Field] = &[
    Field::Text(1, "namespace"),
    Field::Text(2, "verb"),
    Field::Text(3, "group"),
    Field::Text(4, "version"),
    Field::Text(5, "resource"),
    Field::Text(6, "subresource"),
    Field::Text(7, "name"),
];
const NON_RESOURCE_ATTRIBUTES: &[Field] = &[Field::Text(1, "path"), Field::Text(2, "verb")];
/// `authorization/v1 SelfSubjectAccessReviewSpec`
const ACCESS_REVIEW_SPEC: &[Field] = &[
    Field::Message(1, "resourceAttributes", RESOURCE_ATTRIBUTES),
    Field::Message(2, "nonResourceAttributes", NON_RESOURCE_ATTRIBUTES),
];
/// `authorization/v1 SelfSubjectRulesReviewSpec`
const RULES_REVIEW_SPEC: &[Field] = &[Field::Text(1, "namespace")];

fn message(raw: &[u8], fields: &[Field]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for field in Fields::new(raw) {
        let (number, wire) = field?;
        for f in fields {
            match (f, &wire) {
                (Field::Text(n, name), Wire::Bytes(b)) if *n == number => {
                    out.insert((*name).into(), json!(text(b)?));
                }
                (Field::RepeatedText(n, name), Wire::Bytes(b)) if *n == number => {
                    let list = out.entry(*name).or_insert_with(|| json!([]));
                    if let Some(list) = list.as_array_mut() {
                        list.push(json!(text(b)?));
                    }
                }
                (Field::Int(n, name), Wire::Varint(v)) if *n == number => {
                    out.insert((*name).into(), json!(*v as i64));
                }
                (Field::Message(n, name, inner), Wire::Bytes(b)) if *n == number => {
                    out.insert((*name).into(), Value::Object(message(b, inner)?));
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// An object with `metadata = 1` and `spec = 2`.
fn review(raw: &[u8], spec: &[Field]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for field in Fields::new(raw) {
        match field? {
            (1, Wire::Bytes(b)) => {
                out.insert("metadata".into(), object_meta(b)?);
            }
            (2, Wire::Bytes(b)) => {
                out.insert("spec".into(), Value::Object(message(b, spec)?));
            }
            _ => {}
        }
    }
    Ok(out)
}

fn namespace(raw: &[u8]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for field in Fields::new(raw) {
        match field? {
            (1, Wire::Bytes(b)) => {
                out.insert("metadata".into(), object_meta(b)?);
            }
            (2, Wire::Bytes(b)) => {
                let mut finalizers = Vec::new();
                for f in Fields::new(b) {
                    if let (1, Wire::Bytes(s)) = f? {
                        finalizers.push(json!(text(s)?));
                    }
                }
                out.insert("spec".into(), json!({"finalizers": finalizers}));
            }
            _ => {}
        }
    }
    Ok(out)
}

fn config_map(raw: &[u8]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for field in Fields::new(raw) {
        match field? {
            (1, Wire::Bytes(b)) => {
                out.insert("metadata".into(), object_meta(b)?);
            }
            (2, Wire::Bytes(b)) => map_entry(&mut out, "data", b, false)?,
            (3, Wire::Bytes(b)) => map_entry(&mut out, "binaryData", b, true)?,
            (4, Wire::Varint(v)) => {
                out.insert("immutable".into(), json!(v != 0));
            }
            _ => {}
        }
    }
    Ok(out)
}

fn secret(raw: &[u8]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for field in Fields::new(raw) {
        match field? {
            (1, Wire::Bytes(b)) => {
                out.insert("metadata".into(), object_meta(b)?);
            }
            (2, Wire::Bytes(b)) => map_entry(&mut out, "data", b, true)?,
            (3, Wire::Bytes(b)) => {
                out.insert("type".into(), json!(text(b)?));
            }
            (4, Wire::Bytes(b)) => map_entry(&mut out, "stringData", b, false)?,
            (5, Wire::Varint(v)) => {
                out.insert("immutable".into(), json!(v != 0));
            }
            _ => {}
        }
    }
    Ok(out)
}

fn service_account(raw: &[u8]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for field in Fields::new(raw) {
        match field? {
            (1, Wire::Bytes(b)) => {
                out.insert("metadata".into(), object_meta(b)?);
            }
            (4, Wire::Varint(v)) => {
                out.insert("automountServiceAccountToken".into(), json!(v != 0));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The ObjectMeta fields a client may set on create.
fn object_meta(raw: &[u8]) -> Result<Value, String> {
    let mut meta = Map::new();
    for field in Fields::new(raw) {
        match field? {
            (1, Wire::Bytes(b)) => {
                meta.insert("name".into(), json!(text(b)?));
            }
            (2, Wire::Bytes(b)) => {
                meta.insert("generateName".into(), json!(text(b)?));
            }
            (3, Wire::Bytes(b)) => {
                meta.insert("namespace".into(), json!(text(b)?));
            }
            (11, Wire::Bytes(b)) => map_entry(&mut meta, "labels", b, false)?,
            (12, Wire::Bytes(b)) => map_entry(&mut meta, "annotations", b, false)?,
            (14, Wire::Bytes(b)) => {
                let finalizers = meta.entry("finalizers").or_insert_with(|| json!([]));
                if let Some(list) = finalizers.as_array_mut() {
                    list.push(json!(text(b)?));
                }
            }
            _ => {}
        }
    }
    Ok(Value::Object(meta))
}

/// Adds one protobuf map entry (key = 1, value = 2) to the JSON map `field`; byte values
/// become base64 as in the JSON encoding.
fn map_entry(
    out: &mut Map<String, Value>,
    field: &str,
    entry: &[u8],
    bytes: bool,
) -> Result<(), String> {
    let mut key = String::new();
    let mut value = Value::String(String::new());
    for f in Fields::new(entry) {
        match f? {
            (1, Wire::Bytes(b)) => key = text(b)?,
            (2, Wire::Bytes(b)) if bytes => value = json!(base64(b)),
            (2, Wire::Bytes(b)) => value = json!(text(b)?),
            _ => {}
        }
    }
    let map = out.entry(field).or_insert_with(|| json!({}));
    if let Some(map) = map.as_object_mut() {
        map.insert(key, value);
    }
    Ok(())
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| format!("invalid UTF-8 in protobuf string: {e}"))
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A decoded field value: the wire types Kubernetes objects use.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Iterates the (field number, value) pairs of one protobuf message.
struct Fields<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            rest: bytes,
            failed: false,
        }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.rest.split_first().ok_or("truncated protobuf varint")?;
            self.rest = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("protobuf varint too long".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err("truncated protobuf field".into());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn field(&mut self) -> Result<(u64, Wire<'a>), String> {
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed
            }
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| "protobuf length overflow")?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed
            }
            other => return Err(format!("unsupported protobuf wire type {other}")),
        };
        Ok((key >> 3, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Wire<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let field = self.field();
        self.failed = field.is_err();
        Some(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(n: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(n << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    fn entry(k: &str, v: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        bytes_field(1, k.as_bytes(), &mut e);
        bytes_field(2, v, &mut e);
        e
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut type_meta = Vec::new();
        bytes_field(1, api_version.as_bytes(), &mut type_meta);
        bytes_field(2, kind.as_bytes(), &mut type_meta);
        let mut out = MAGIC.to_vec();
        bytes_field(1, &type_meta, &mut out);
        bytes_field(2, raw, &mut out);
        bytes_field(4, b"application/vnd.kubernetes.protobuf", &mut out);
        out
    }

    #[test]
    fn decodes_a_namespace_as_kubectl_create_sends_it() {
        let mut meta = Vec::new();
        bytes_field(1, b"fleet", &mut meta);
        bytes_field(11, &entry("team", b"ota"), &mut meta);
        let mut ns = Vec::new();
        bytes_field(1, &meta, &mut ns);
        bytes_field(2, &[], &mut ns);
        bytes_field(3, &[], &mut ns);
        let decoded = decode(&envelope("v1", "Namespace", &ns)).unwrap();
        assert_eq!(
            decoded,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "fleet", "labels": {"team": "ota"}},
                   "spec": {"finalizers": []}})
        );
    }

    #[test]
    fn decodes_config_maps_and_secrets_with_binary_values() {
        let mut meta = Vec::new();
        bytes_field(1, b"settings", &mut meta);
        bytes_field(3, b"default", &mut meta);
        let mut cm = Vec::new();
        bytes_field(1, &meta, &mut cm);
        bytes_field(2, &entry("mode", b"fast"), &mut cm);
        bytes_field(3, &entry("blob", &[0, 1, 2, 250]), &mut cm);
        varint(4 << 3, &mut cm);
        varint(1, &mut cm);
        let decoded = decode(&envelope("v1", "ConfigMap", &cm)).unwrap();
        assert_eq!(decoded["data"], json!({"mode": "fast"}));
        assert_eq!(decoded["binaryData"], json!({"blob": "AAEC+g=="}));
        assert_eq!(decoded["immutable"], json!(true));

        let mut secret = Vec::new();
        bytes_field(1, &meta, &mut secret);
        bytes_field(2, &entry("token", b"s3cret"), &mut secret);
        bytes_field(3, b"Opaque", &mut secret);
        let decoded = decode(&envelope("v1", "Secret", &secret)).unwrap();
        assert_eq!(decoded["data"], json!({"token": "czNjcmV0"}));
        assert_eq!(decoded["type"], json!("Opaque"));
    }

    #[test]
    fn refuses_other_kinds_and_garbage() {
        assert!(
            decode(&envelope("apps/v1", "Deployment", &[]))
                .unwrap_err()
                .contains("Deployment")
        );
        assert!(decode(b"{}").is_err());
        let mut truncated = envelope("v1", "Namespace", &[]);
        truncated.push(0x0a);
        truncated.push(0x05);
        assert!(decode(&truncated).is_err());
    }

    #[test]
    fn decodes_token_requests_and_access_reviews() {
        let mut spec = Vec::new();
        bytes_field(
            1,
            b"https://kubernetes.default.svc.cluster.local",
            &mut spec,
        );
        varint(4 << 3, &mut spec);
        varint(900, &mut spec);
        let mut request = Vec::new();
        bytes_field(1, &[], &mut request);
        bytes_field(2, &spec, &mut request);
        let decoded = decode(&envelope(
            "authentication.k8s.io/v1",
            "TokenRequest",
            &request,
        ))
        .unwrap();
        assert_eq!(
            decoded,
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "metadata": {},
                   "spec": {"audiences": ["https://kubernetes.default.svc.cluster.local"],
                            "expirationSeconds": 900}})
        );
        let mut attributes = Vec::new();
        bytes_field(1, b"team", &mut attributes);
        bytes_field(2, b"list", &mut attributes);
        bytes_field(3, b"flotilla.dev", &mut attributes);
        bytes_field(5, b"plans", &mut attributes);
        let mut spec = Vec::new();
        bytes_field(1, &attributes, &mut spec);
        let mut review = Vec::new();
        bytes_field(1, &[], &mut review);
        bytes_field(2, &spec, &mut review);
        let decoded = decode(&envelope(
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview",
            &review,
        ))
        .unwrap();
        assert_eq!(
            decoded["spec"],
            json!({"resourceAttributes": {"namespace": "team", "verb": "list",
                                          "group": "flotilla.dev", "resource": "plans"}})
        );
    }
}
