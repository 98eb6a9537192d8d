//! The name test vectors shared with the web client (`name_keys.json`, also
//! read by `web/test/names.test.ts`): both sides key names the same way.

use chat_proto::normalize_username;

#[test]
fn shared_name_vectors() {
    let text = include_str!("name_keys.json");
    let doc: serde_json::Value = serde_json::from_str(text).expect("name_keys.json is JSON");
    let vectors = doc["vectors"].as_array().expect("a vectors array");
    assert!(vectors.len() >= 10);
    for v in vectors {
        let raw = v["raw"].as_str().expect("raw");
        let name = normalize_username(raw).unwrap_or_else(|e| panic!("{raw:?} refused: {e}"));
        assert_eq!(
            name.display,
            v["display"].as_str().expect("display"),
            "display of {raw:?}"
        );
        assert_eq!(name.key, v["key"].as_str().expect("key"), "key of {raw:?}");
    }
}
