//! Weights files as an attacker or a broken download would shape them: a header that claims a
//! terabyte, offsets past the end or overlapping, options that would allocate a huge model,
//! foreign dtypes and shapes. Each is refused with a sentence before anything large is allocated.

use burn::backend::Flex;
use glide_model::GlideConfig;
use glide_model::weights::save_weights;
use glide_pipeline::Text2Im;
use serde_json::Value;

type B = Flex;

fn tiny_file() -> Vec<u8> {
    let config = GlideConfig::tiny();
    let model = config.init::<B>(&Default::default());
    save_weights(&model, &config, &[], false)
}

/// The file's header as JSON and its data.
fn split(bytes: &[u8]) -> (Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

fn join(header: &Value, data: &[u8]) -> Vec<u8> {
    let json = header.to_string().into_bytes();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    out.extend(data);
    out
}

/// The error `Text2Im` gives for `bytes` (it must give one).
fn refusal(bytes: &[u8]) -> String {
    match Text2Im::<B>::from_safetensors(bytes, &Default::default()) {
        Ok(_) => panic!("a hostile file loaded"),
        Err(e) => e.to_string(),
    }
}

/// The tensor names of a header, in the file's data order.
fn tensors_in_order(header: &Value) -> Vec<String> {
    let mut names: Vec<(u64, String)> = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| (v["data_offsets"][0].as_u64().unwrap(), k.clone()))
        .collect();
    names.sort();
    names.into_iter().map(|(_, k)| k).collect()
}

#[test]
fn the_untouched_file_loads() {
    Text2Im::<B>::from_safetensors(&tiny_file(), &Default::default()).unwrap();
}

#[test]
fn broken_containers_are_refused() {
    let good = tiny_file();
    // A header length of 1 TB, and one of u64::MAX.
    for n in [1u64 << 40, u64::MAX] {
        let mut bytes = n.to_le_bytes().to_vec();
        bytes.extend(b"{}");
        let msg = refusal(&bytes);
        assert!(msg.contains("not valid safetensors"), "{msg}");
    }
    // Cut anywhere.
    for cut in [0, 7, 8, 100, good.len() / 2, good.len() - 1] {
        let msg = refusal(&good[..cut]);
        assert!(msg.contains("not valid safetensors"), "cut at {cut}: {msg}");
    }
    let (header, data) = split(&good);
    let names = tensors_in_order(&header);
    // Offsets past the end of the data.
    let mut h = header.clone();
    h[&names[0]]["data_offsets"][1] = Value::from(data.len() as u64 * 1000);
    assert!(refusal(&join(&h, &data)).contains("not valid safetensors"));
    // Two tensors over the same bytes.
    let mut h = header.clone();
    h[&names[1]]["data_offsets"] = h[&names[0]]["data_offsets"].clone();
    h[&names[1]]["shape"] = h[&names[0]]["shape"].clone();
    assert!(refusal(&join(&h, &data)).contains("not valid safetensors"));
    // A shape whose element count overflows.
    let mut h = header.clone();
    h[&names[0]]["shape"] = serde_json::json!([u64::MAX, u64::MAX]);
    assert!(refusal(&join(&h, &data)).contains("not valid safetensors"));
}

#[test]
fn options_that_would_allocate_a_huge_model_are_refused_first() {
    let (header, data) = split(&tiny_file());
    let options: Value =
        serde_json::from_str(header["__metadata__"]["options"].as_str().unwrap()).unwrap();
    for (key, value, says) in [
        (
            "num_channels",
            Value::from(1u64 << 20),
            "more than glide-rs builds",
        ),
        (
            "xf_layers",
            Value::from(100_000),
            "more than glide-rs builds",
        ),
        (
            "n_vocab",
            Value::from(1u64 << 40),
            "more than glide-rs builds",
        ),
        (
            "text_ctx",
            Value::from(1u64 << 30),
            "more than glide-rs builds",
        ),
        // Each option within its cap, together ~10G parameters.
        ("num_channels", Value::from(2048), "parameters"),
    ] {
        let mut o = options.clone();
        o[key] = value;
        if key == "num_channels" && says == "parameters" {
            o["num_res_blocks"] = 16.into();
            o["channel_mult"] = "1,2,4".into();
        }
        let mut h = header.clone();
        h["__metadata__"]["options"] = o.to_string().into();
        let msg = refusal(&join(&h, &data));
        assert!(msg.contains(says), "{key}: {msg}");
    }
}

#[test]
fn foreign_dtypes_and_shapes_are_named() {
    let (header, data) = split(&tiny_file());
    let names = tensors_in_order(&header);
    let name = names
        .iter()
        .find(|n| {
            let shape = header[*n]["shape"].as_array().unwrap();
            shape.len() == 2 && shape[0] != shape[1]
        })
        .unwrap();
    let mut h = header.clone();
    h[name]["dtype"] = "I32".into();
    let msg = refusal(&join(&h, &data));
    assert!(msg.contains(name.as_str()) && msg.contains("I32"), "{msg}");

    let mut h = header.clone();
    let shape = h[name]["shape"].as_array().unwrap().clone();
    h[name]["shape"] = Value::Array(vec![shape[1].clone(), shape[0].clone()]);
    let msg = refusal(&join(&h, &data));
    assert!(msg.contains(name.as_str()), "{msg}");
}
