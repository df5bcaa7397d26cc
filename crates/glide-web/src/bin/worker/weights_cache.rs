// Weights through Cache Storage: a cached copy is revalidated with the server (`If-None-Match` /
// `If-Modified-Since`), so weights replaced at the same URL are noticed; a download is stored only
// when it is whole (its length matches and it passes its check: it parses as safetensors, or a
// shard matches the SHA-256 its index lists), so a transfer that fails half-way leaves nothing
// behind and Retry starts clean. Offline, the cached copy is used. A shard whose cached copy
// matches its index's SHA-256 is used without asking the server: a sharded model resumes where
// its download stopped, shard by shard.

use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Cache, Headers, ReadableStreamDefaultReader, RequestCache, RequestInit, Response, ResponseInit,
};

use super::{js_err, post, scope};
use glide_model::ShardIndex;
use glide_web::FromWorker;

/// What a download must be before it is used and kept.
pub enum Check<'a> {
    /// A whole safetensors file.
    Safetensors,
    /// A shard index.
    Index,
    /// The shard `file` of `index` (size and SHA-256).
    Shard(&'a ShardIndex, &'a str),
}

impl Check<'_> {
    fn check(&self, url: &str, bytes: &[u8]) -> Result<(), String> {
        let why = match self {
            Check::Safetensors => safetensors::SafeTensors::deserialize(bytes)
                .err()
                .map(|e| format!("it is not a whole safetensors file ({e})")),
            Check::Index => ShardIndex::parse(bytes).err().map(|e| e.to_string()),
            Check::Shard(index, file) => {
                index.verify_shard(file, bytes).err().map(|e| e.to_string())
            }
        };
        match why {
            None => Ok(()),
            Some(why) => Err(format!(
                "{url} cannot be used: {why}. Nothing was kept: Retry, or check the URL."
            )),
        }
    }
}

/// How a download reports progress.
#[derive(Clone, Copy)]
pub enum Report {
    /// Not at all (a small index).
    Silent,
    /// As the whole load (its own length).
    Whole,
    /// As a part starting at `offset` of a load of `total` bytes (a shard).
    Part { offset: u64, total: u64 },
}

impl Report {
    fn post(self, got: u64, own_total: u64, cached: bool) {
        let (loaded, total) = match self {
            Report::Silent => return,
            Report::Whole => (got, own_total),
            Report::Part { offset, total } => (offset + got, total),
        };
        post(&FromWorker::Progress {
            loaded,
            total,
            cached,
        });
    }
}

const CACHE_NAME: &str = "glide-weights-v1";
/// Validators kept with a cached copy.
const VALIDATORS: [(&str, &str); 2] = [
    ("etag", "if-none-match"),
    ("last-modified", "if-modified-since"),
];

/// The weights at `url`: the cached copy if the server says it is current (or cannot be reached),
/// else a fresh download with progress, stored for the next visit.
pub async fn fetch_weights(url: &str) -> Result<Vec<u8>, String> {
    fetch_checked(url, Check::Safetensors, Report::Whole).await
}

/// Shard `file` of `index` at `url`: the cached copy when it matches the index's SHA-256 (no
/// request), else a download (checked and stored).
pub async fn fetch_shard(
    url: &str,
    index: &ShardIndex,
    file: &str,
    report: Report,
) -> Result<Vec<u8>, String> {
    if let Some(cache) = open_cache().await {
        let hit = JsFuture::from(cache.match_with_str(url))
            .await
            .ok()
            .and_then(|hit| hit.dyn_into::<Response>().ok());
        if let Some(resp) = hit {
            let bytes = read_cached(resp, Report::Silent).await?;
            if index.verify_shard(file, &bytes).is_ok() {
                report.post(bytes.len() as u64, bytes.len() as u64, true);
                return Ok(bytes);
            }
        }
    }
    fetch_checked(url, Check::Shard(index, file), report).await
}

/// The file at `url` through the cache, revalidated, passing `check` (see the file's head).
pub async fn fetch_checked(url: &str, check: Check<'_>, report: Report) -> Result<Vec<u8>, String> {
    let cache = open_cache().await;
    let cached = match &cache {
        Some(c) => JsFuture::from(c.match_with_str(url))
            .await
            .ok()
            .and_then(|hit| hit.dyn_into::<Response>().ok()),
        None => None,
    };
    let conditional = Headers::new().map_err(js_err)?;
    let mut validated = false;
    if let Some(c) = &cached {
        for (stored, ask) in VALIDATORS {
            if let Ok(Some(v)) = c.headers().get(stored) {
                let _ = conditional.set(ask, &v);
                validated = true;
            }
        }
    }
    if let Some(c) = &cached {
        if !validated {
            // Nothing to ask the server with: the copy is used as it is.
            return read_cached(Clone::clone(c), report).await;
        }
    }
    let init = RequestInit::new();
    // Our cache is the cache: the browser's HTTP cache must not answer for the server.
    init.set_cache(RequestCache::NoStore);
    init.set_headers(&conditional);
    let fetched = JsFuture::from(scope().fetch_with_str_and_init(url, &init)).await;
    let resp: Response = match (fetched, cached) {
        // Unchanged on the server, or the server cannot be reached: the cached copy.
        (Ok(r), Some(c)) if r.unchecked_ref::<Response>().status() == 304 => {
            return read_cached(c, report).await;
        }
        (Err(_), Some(c)) => return read_cached(c, report).await,
        (Ok(r), _) => r.unchecked_into(),
        (Err(e), None) => {
            return Err(format!(
                "Could not download the weights from {url} ({}). Check your connection (or that \
                 the server is running: make serve), then Retry.",
                js_err(e)
            ));
        }
    };
    if !resp.ok() {
        return Err(format!(
            "The weights {url} could not be loaded (HTTP {}). Run `make serve`, which writes \
             the model file, or pass ?weights=URL pointing at a .safetensors file.",
            resp.status()
        ));
    }
    let bytes = download(url, &resp, report).await?;
    check.check(url, &bytes)?;
    if let Some(cache) = &cache {
        store(cache, url, &resp, &bytes).await;
    }
    Ok(bytes)
}

async fn open_cache() -> Option<Cache> {
    let caches = scope().caches().ok()?;
    JsFuture::from(caches.open(CACHE_NAME))
        .await
        .ok()
        .map(|c| c.unchecked_into())
}

async fn read_cached(resp: Response, report: Report) -> Result<Vec<u8>, String> {
    let buf = JsFuture::from(resp.array_buffer().map_err(js_err)?)
        .await
        .map_err(js_err)?;
    let bytes = Uint8Array::new(&buf).to_vec();
    let n = bytes.len() as u64;
    report.post(n, n, true);
    Ok(bytes)
}

/// The body of `resp`, with progress; an error if the transfer stops early.
async fn download(url: &str, resp: &Response, report: Report) -> Result<Vec<u8>, String> {
    let total = resp
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let broke = |got: usize, why: String| {
        format!(
            "The download of {url} stopped at {:.1} of {:.1} MB ({why}). Nothing was kept: \
             check your connection and Retry.",
            got as f64 / 1e6,
            total as f64 / 1e6
        )
    };
    let body = resp.body().ok_or("The weights response has no body.")?;
    let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut bytes = Vec::with_capacity(total as usize);
    let mut last_post = 0u64;
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| broke(bytes.len(), js_err(e)))?;
        if Reflect::get(&chunk, &"done".into())
            .ok()
            .and_then(|d| d.as_bool())
            .unwrap_or(true)
        {
            break;
        }
        let value: Uint8Array = Reflect::get(&chunk, &"value".into())
            .map_err(js_err)?
            .unchecked_into();
        bytes.extend(value.to_vec());
        let loaded = bytes.len() as u64;
        if loaded - last_post > 256 * 1024 || loaded == total {
            last_post = loaded;
            report.post(loaded, total, false);
        }
    }
    if total > 0 && bytes.len() as u64 != total {
        return Err(broke(bytes.len(), "the connection closed early".into()));
    }
    Ok(bytes)
}

/// Stores a whole download with the server's validators.
async fn store(cache: &Cache, url: &str, resp: &Response, bytes: &[u8]) {
    let Ok(headers) = Headers::new() else { return };
    for (stored, _) in VALIDATORS {
        if let Ok(Some(v)) = resp.headers().get(stored) {
            let _ = headers.set(stored, &v);
        }
    }
    let init = ResponseInit::new();
    init.set_headers(&headers);
    let mut copy = bytes.to_vec();
    if let Ok(r) = Response::new_with_opt_u8_array_and_init(Some(&mut copy), &init) {
        let _ = JsFuture::from(cache.put_with_str(url, &r)).await;
    }
}
