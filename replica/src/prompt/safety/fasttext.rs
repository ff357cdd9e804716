//! A reader for fastText's supervised `.bin` models and its `predict`, in Rust, so the
//! safety filter needs no C++ library and a corrupt file cannot take the replica down.
//!
//! It follows fastText 0.9.2 (`src/fasttext.cc`, `dictionary.cc`, `loss.cc`) step by step:
//! the same whitespace tokenization with `</s>` at the end of the line, the same FNV-1a
//! hashing (bytes sign-extended, as fastText's `int8_t` cast does) for character n-grams
//! (`minn..=maxn` of `<word>`) and word n-grams (`wordNgrams`, folded into `bucket`), the
//! average of the input rows, then softmax (`loss='softmax'`) or fastText's tabulated
//! sigmoid (`ns`, `ova`). Hierarchical softmax and quantized `.ftz` files are refused with
//! a cause, and every size in the file is checked against the bytes left before anything is
//! allocated.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// `FASTTEXT_FILEFORMAT_MAGIC_INT32`.
const MAGIC: i32 = 793_712_314;
/// Newest file version fastText writes (0.9.x).
const NEWEST_VERSION: i32 = 12;
/// End of line: fastText appends it to every line it predicts on.
const EOS: &[u8] = b"</s>";
/// Tokens starting with this are labels, not words (fastText's default `-label`).
const LABEL_PREFIX: &[u8] = b"__label__";
const SIGMOID_TABLE_SIZE: usize = 512;
const MAX_SIGMOID: f32 = 8.0;

/// Why a model file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a fastText model (bad magic number)")]
    NotFastText,
    #[error("fastText file version {0} is newer than the supported {NEWEST_VERSION}")]
    Version(i32),
    #[error("a word-vector model (cbow/skipgram), not a supervised classifier")]
    NotSupervised,
    #[error(
        "a quantized model (.ftz) is not supported; use the .bin that `train_supervised` saves"
    )]
    Quantized,
    #[error(
        "hierarchical softmax (loss='hs') is not supported; train with loss='softmax' or 'ova'"
    )]
    HierarchicalSoftmax,
    #[error("the file ends early (truncated)")]
    Truncated,
    #[error("corrupt model: {0}")]
    Corrupt(String),
}

fn corrupt(what: impl Into<String>) -> LoadError {
    LoadError::Corrupt(what.into())
}

/// How logits become per-label probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Softmax,
    /// `ns` and `ova`: one independent sigmoid per label, through fastText's lookup table.
    Sigmoid,
}

/// The most probable label for a text and its probability (fastText's `predict(k=1)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    pub label: usize,
    /// The model's probability in 0..=1. fastText reports `p + 1e-5` (it takes
    /// `exp(log(p + 1e-5))`); the difference is never more than that.
    pub probability: f32,
}

/// A loaded supervised fastText model; immutable, so one is shared by every session.
pub struct FastTextClassifier {
    dim: usize,
    minn: i64,
    maxn: i64,
    word_ngrams: i64,
    bucket: u32,
    nwords: u32,
    /// Word and label entries by their bytes, to their dictionary index.
    ids: HashMap<Box<[u8]>, u32>,
    labels: Vec<String>,
    output: Output,
    /// `(nwords + bucket) x dim`, row-major.
    input: Vec<f32>,
    /// `labels x dim`, row-major.
    weights: Vec<f32>,
    sigmoid: Vec<f32>,
}

impl std::fmt::Debug for FastTextClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastTextClassifier")
            .field("dim", &self.dim)
            .field("words", &self.nwords)
            .field("bucket", &self.bucket)
            .field("labels", &self.labels)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

impl FastTextClassifier {
    /// Reads a `.bin` written by fastText's `save_model` for a supervised model.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut r = ModelReader {
            inner: BufReader::new(file),
            left: len,
        };
        Self::read(&mut r)
    }

    /// The labels as the file spells them (`__label__unsafe`), most frequent first.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The most probable label of `text` taken as one line, or `None` when no token of it
    /// maps to an input row (fastText then predicts nothing either).
    pub fn predict(&self, text: &str) -> Option<Prediction> {
        let ids = self.input_ids(text.as_bytes());
        if ids.is_empty() {
            return None;
        }
        let mut hidden = vec![0f32; self.dim];
        for &id in &ids {
            let row = &self.input[id as usize * self.dim..][..self.dim];
            for (h, w) in hidden.iter_mut().zip(row) {
                *h += w;
            }
        }
        let scale = (1.0 / ids.len() as f64) as f32;
        hidden.iter_mut().for_each(|h| *h *= scale);
        let mut out: Vec<f32> = self
            .weights
            .chunks_exact(self.dim)
            .map(|row| row.iter().zip(&hidden).fold(0f32, |d, (w, h)| d + w * h))
            .collect();
        match self.output {
            Output::Softmax => {
                let max = out.iter().copied().fold(out[0], f32::max);
                let mut z = 0f32;
                for o in &mut out {
                    *o = (*o - max).exp();
                    z += *o;
                }
                out.iter_mut().for_each(|o| *o /= z);
            }
            Output::Sigmoid => out.iter_mut().for_each(|o| *o = self.sigmoid(*o)),
        }
        // fastText's k=1 heap keeps the later of two equal scores.
        let (label, &probability) = out
            .iter()
            .enumerate()
            .reduce(|best, cur| if cur.1 >= best.1 { cur } else { best })?;
        Some(Prediction { label, probability })
    }

    /// Input rows for one line: each word (or, out of vocabulary, its character n-grams),
    /// then the word n-grams; labels in the text are skipped (`Dictionary::getLine`).
    fn input_ids(&self, line: &[u8]) -> Vec<u32> {
        let is_space = |b: &u8| matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c | 0);
        let tokens = line
            .split(is_space)
            .filter(|t| !t.is_empty())
            .chain(std::iter::once(EOS));
        let mut ids = Vec::new();
        let mut word_hashes = Vec::new();
        for token in tokens {
            let id = self.ids.get(token).copied();
            let is_label = match id {
                Some(id) => id >= self.nwords,
                None => token.starts_with(LABEL_PREFIX),
            };
            if is_label {
                continue;
            }
            if let Some(id) = id {
                ids.push(id);
            }
            if token != EOS && (id.is_none() || self.maxn > 0) {
                self.push_char_ngrams(token, &mut ids);
            }
            word_hashes.push(hash(token) as i32);
        }
        self.push_word_ngrams(&word_hashes, &mut ids);
        ids
    }

    /// `Dictionary::computeSubwords` over `<token>`: n-grams of `minn..=maxn` UTF-8
    /// characters, single characters at either end left out.
    fn push_char_ngrams(&self, token: &[u8], ids: &mut Vec<u32>) {
        if self.bucket == 0 {
            return;
        }
        let mut word = Vec::with_capacity(token.len() + 2);
        word.push(b'<');
        word.extend_from_slice(token);
        word.push(b'>');
        let continuation = |b: u8| b & 0xc0 == 0x80;
        for i in 0..word.len() {
            if continuation(word[i]) {
                continue;
            }
            let (mut j, mut n) = (i, 1);
            while j < word.len() && n <= self.maxn {
                j += 1;
                while j < word.len() && continuation(word[j]) {
                    j += 1;
                }
                if n >= self.minn && !(n == 1 && (i == 0 || j == word.len())) {
                    ids.push(self.nwords + hash(&word[i..j]) % self.bucket);
                }
                n += 1;
            }
        }
    }

    /// `Dictionary::addWordNgrams`, with its sign extensions of the 32-bit word hashes.
    fn push_word_ngrams(&self, hashes: &[i32], ids: &mut Vec<u32>) {
        if self.bucket == 0 {
            return;
        }
        for i in 0..hashes.len() {
            let mut h = hashes[i] as i64 as u64;
            for &next in hashes
                .iter()
                .take(i + self.word_ngrams.max(1) as usize)
                .skip(i + 1)
            {
                h = h.wrapping_mul(116_049_371).wrapping_add(next as i64 as u64);
                ids.push(self.nwords + (h % u64::from(self.bucket)) as u32);
            }
        }
    }

    /// `Loss::sigmoid`: a 512-step table between -8 and 8.
    fn sigmoid(&self, x: f32) -> f32 {
        if x < -MAX_SIGMOID {
            0.0
        } else if x > MAX_SIGMOID {
            1.0
        } else {
            let i = ((x + MAX_SIGMOID) * SIGMOID_TABLE_SIZE as f32 / MAX_SIGMOID / 2.0) as usize;
            self.sigmoid[i.min(SIGMOID_TABLE_SIZE)]
        }
    }

    fn read(r: &mut ModelReader) -> Result<Self, LoadError> {
        if r.i32()? != MAGIC {
            return Err(LoadError::NotFastText);
        }
        let version = r.i32()?;
        if version > NEWEST_VERSION {
            return Err(LoadError::Version(version));
        }
        // Args::save: dim ws epoch minCount neg wordNgrams loss model bucket minn maxn
        // lrUpdateRate (int32 each), t (double).
        let dim = r.i32()?;
        r.skip(4 * 4)?;
        let word_ngrams = r.i32()?;
        let loss = r.i32()?;
        let model = r.i32()?;
        let bucket = r.i32()?;
        let minn = r.i32()?;
        let mut maxn = r.i32()?;
        r.skip(4 + 8)?;
        if model != 3 {
            return Err(LoadError::NotSupervised);
        }
        let output = match loss {
            1 => return Err(LoadError::HierarchicalSoftmax),
            2 | 4 => Output::Sigmoid,
            3 => Output::Softmax,
            other => return Err(corrupt(format!("unknown loss {other}"))),
        };
        if version == 11 {
            // fastText: "old supervised models do not use char ngrams".
            maxn = 0;
        }
        let dim = usize::try_from(dim)
            .ok()
            .filter(|&d| d > 0)
            .ok_or_else(|| corrupt(format!("dim {dim}")))?;
        let bucket = u32::try_from(bucket).map_err(|_| corrupt(format!("bucket {bucket}")))?;

        let size = r.i32()?;
        let nwords = r.i32()?;
        let nlabels = r.i32()?;
        r.skip(8)?; // ntokens
        let pruned = r.i64()?;
        if size < 0
            || nwords < 0
            || nlabels <= 0
            || i64::from(nwords) + i64::from(nlabels) != i64::from(size)
        {
            return Err(corrupt(format!(
                "dictionary of {size} entries, {nwords} words and {nlabels} labels"
            )));
        }
        // Each entry is at least a NUL, an 8-byte count and a type byte.
        if size as u64 * 10 > r.left {
            return Err(LoadError::Truncated);
        }
        let nwords = nwords as u32;
        let mut ids = HashMap::with_capacity(size as usize);
        let mut labels = Vec::with_capacity(nlabels as usize);
        for i in 0..size as u32 {
            let entry = r.until_nul()?;
            r.skip(8)?; // count
            let is_label = match r.u8()? {
                0 => false,
                1 => true,
                other => return Err(corrupt(format!("entry {i} has type {other}"))),
            };
            // fastText sorts words before labels and indexes both by that order.
            if is_label != (i >= nwords) {
                return Err(corrupt(format!("entry {i} is out of order")));
            }
            if is_label {
                labels.push(String::from_utf8_lossy(&entry).into_owned());
            }
            ids.entry(entry.into_boxed_slice()).or_insert(i);
        }
        if pruned > 0 {
            r.skip(
                u64::try_from(pruned)
                    .map_err(|_| LoadError::Truncated)?
                    .saturating_mul(8),
            )?;
        }
        if r.u8()? != 0 {
            return Err(LoadError::Quantized);
        }
        if pruned >= 0 {
            return Err(corrupt("a pruned dictionary without quantization"));
        }
        let input = r.matrix(u64::from(nwords) + u64::from(bucket), dim, "input")?;
        if r.u8()? != 0 {
            return Err(LoadError::Quantized);
        }
        let weights = r.matrix(labels.len() as u64, dim, "output")?;
        let sigmoid = (0..=SIGMOID_TABLE_SIZE)
            .map(|i| {
                let x = (i as f32 * 2.0 * MAX_SIGMOID) / SIGMOID_TABLE_SIZE as f32 - MAX_SIGMOID;
                (1.0 / (1.0 + f64::from((-x).exp()))) as f32
            })
            .collect();
        Ok(Self {
            dim,
            minn: minn.into(),
            maxn: maxn.into(),
            word_ngrams: word_ngrams.into(),
            bucket,
            nwords,
            ids,
            labels,
            output,
            input,
            weights,
            sigmoid,
        })
    }
}

/// `Dictionary::hash`: FNV-1a over the bytes, each sign-extended first.
fn hash(bytes: &[u8]) -> u32 {
    bytes.iter().fold(2_166_136_261u32, |h, &b| {
        (h ^ (b as i8 as i32 as u32)).wrapping_mul(16_777_619)
    })
}

/// Little-endian reads that know how many bytes the file has left, so a corrupt size
/// fails as `Truncated` instead of allocating it.
struct ModelReader {
    inner: BufReader<File>,
    left: u64,
}

impl ModelReader {
    fn take(&mut self, n: u64) -> Result<(), LoadError> {
        if n > self.left {
            return Err(LoadError::Truncated);
        }
        self.left -= n;
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], LoadError> {
        self.take(N as u64)?;
        let mut buf = [0; N];
        self.inner.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn u8(&mut self) -> Result<u8, LoadError> {
        Ok(self.array::<1>()?[0])
    }

    fn i32(&mut self) -> Result<i32, LoadError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, LoadError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn skip(&mut self, n: u64) -> Result<(), LoadError> {
        self.take(n)?;
        std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())?;
        Ok(())
    }

    fn until_nul(&mut self) -> Result<Vec<u8>, LoadError> {
        let mut bytes = Vec::new();
        loop {
            match self.u8()? {
                0 => return Ok(bytes),
                b => bytes.push(b),
            }
        }
    }

    /// A `DenseMatrix`: rows and columns (int64 each), then the floats; the shape must be
    /// the one the header implies and every weight finite.
    fn matrix(&mut self, rows: u64, cols: usize, name: &str) -> Result<Vec<f32>, LoadError> {
        let (m, n) = (self.i64()?, self.i64()?);
        if u64::try_from(m).ok() != Some(rows) || usize::try_from(n).ok() != Some(cols) {
            return Err(corrupt(format!(
                "{name} matrix is {m}x{n}, expected {rows}x{cols}"
            )));
        }
        let bytes = rows
            .checked_mul(cols as u64 * 4)
            .ok_or(LoadError::Truncated)?;
        self.take(bytes)?;
        let mut values = Vec::with_capacity((bytes / 4) as usize);
        let mut chunk = vec![0u8; 1 << 16];
        let mut left = bytes as usize;
        while left > 0 {
            let part = &mut chunk[..left.min(1 << 16)];
            self.inner.read_exact(part)?;
            values.extend(
                part.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
            left -= part.len();
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(corrupt(format!(
                "{name} matrix holds NaN or infinite weights"
            )));
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model file as fastText 0.9.2 writes it: `words` then `labels`, no subwords or
    /// n-grams unless `minn..=maxn`/`word_ngrams`/`bucket` ask for them.
    struct Spec<'a> {
        loss: i32,
        bucket: i32,
        minn: i32,
        maxn: i32,
        word_ngrams: i32,
        words: &'a [&'a str],
        labels: &'a [&'a str],
        input: Vec<f32>,
        output: Vec<f32>,
        quantized: bool,
    }

    const DIM: usize = 2;

    fn write(spec: &Spec) -> Vec<u8> {
        let mut b = Vec::new();
        let i32s = |b: &mut Vec<u8>, v: &[i32]| v.iter().for_each(|x| b.extend(x.to_le_bytes()));
        i32s(&mut b, &[MAGIC, 12]);
        i32s(
            &mut b,
            &[
                DIM as i32,
                5,
                5,
                1,
                5,
                spec.word_ngrams,
                spec.loss,
                3,
                spec.bucket,
            ],
        );
        i32s(&mut b, &[spec.minn, spec.maxn, 100]);
        b.extend(1e-4f64.to_le_bytes());
        let size = (spec.words.len() + spec.labels.len()) as i32;
        i32s(
            &mut b,
            &[size, spec.words.len() as i32, spec.labels.len() as i32],
        );
        b.extend(10i64.to_le_bytes());
        b.extend((-1i64).to_le_bytes());
        for (i, w) in spec.words.iter().chain(spec.labels).enumerate() {
            b.extend(w.as_bytes());
            b.push(0);
            b.extend(1i64.to_le_bytes());
            b.push(u8::from(i >= spec.words.len()));
        }
        // quant_input, the input matrix (nwords + bucket rows, whatever `input` holds), qout,
        // the output matrix.
        b.push(u8::from(spec.quantized));
        let rows = spec.words.len() as i64 + i64::from(spec.bucket);
        for (i, (m, v)) in [
            (rows, &spec.input),
            ((spec.output.len() / DIM) as i64, &spec.output),
        ]
        .into_iter()
        .enumerate()
        {
            if i == 1 {
                b.push(0);
            }
            b.extend(m.to_le_bytes());
            b.extend((DIM as i64).to_le_bytes());
            v.iter().for_each(|x| b.extend(x.to_le_bytes()));
        }
        b
    }

    fn load(bytes: &[u8]) -> Result<FastTextClassifier, LoadError> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        FastTextClassifier::load(file.path())
    }

    /// Two words, two labels, plain word rows: "calm" points at safe, "gore" at unsafe.
    fn plain(loss: i32) -> Spec<'static> {
        Spec {
            loss,
            bucket: 0,
            minn: 0,
            maxn: 0,
            word_ngrams: 1,
            words: &["</s>", "calm", "gore"],
            labels: &["__label__safe", "__label__unsafe"],
            input: vec![0.0, 0.0, 2.0, 0.0, 0.0, 2.0],
            output: vec![1.0, 0.0, 0.0, 1.0],
            quantized: false,
        }
    }

    #[test]
    fn hash_is_fnv1a_with_sign_extended_bytes() {
        assert_eq!(hash(b""), 2_166_136_261);
        assert_eq!(hash(b"a"), 0xe40c_292c, "plain FNV-1a for ASCII");
        // 0xc3 sign-extends to 0xffffffc3, so the hash differs from plain FNV-1a.
        let plain = (2_166_136_261u32 ^ 0xc3).wrapping_mul(16_777_619);
        assert_ne!(hash(&[0xc3]), plain);
    }

    #[test]
    fn softmax_averages_the_word_rows_and_their_end_of_line() {
        let model = load(&write(&plain(3))).unwrap();
        assert_eq!(model.labels(), ["__label__safe", "__label__unsafe"]);
        // "gore" + "</s>": hidden (0, 1), logits (0, 1).
        let p = model.predict("gore").unwrap();
        assert_eq!(p.label, 1);
        let expected = 1f32.exp() / (1.0 + 1f32.exp());
        assert!((p.probability - expected).abs() < 1e-6, "{p:?}");
        // Out-of-vocabulary words add nothing without subwords; labels in the text are skipped.
        assert_eq!(model.predict("calm __label__unsafe\tzzz").unwrap().label, 0);
        // Only "</s>" (a zero row): a tie, which fastText resolves to the later label.
        assert_eq!(model.predict("").unwrap().label, 1);
    }

    #[test]
    fn one_vs_all_uses_the_sigmoid_table() {
        let model = load(&write(&plain(4))).unwrap();
        let p = model.predict("calm calm calm").unwrap();
        // hidden (1.5, 0): sigmoid(1.5) from the table, bin (1.5 + 8) * 32 = 304.
        assert_eq!(p.label, 0);
        let expected = 1.0 / (1.0 + (-1.5f32).exp());
        assert_eq!(p.probability, model.sigmoid[304]);
        assert!((p.probability - expected).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn char_and_word_ngrams_land_in_the_bucket_rows() {
        let mut spec = plain(3);
        spec.bucket = 7;
        spec.minn = 2;
        spec.maxn = 3;
        spec.word_ngrams = 2;
        spec.input.resize((3 + 7) * DIM, 0.0);
        let model = load(&write(&spec)).unwrap();
        let ngrams = |token: &str| {
            let mut ids = Vec::new();
            model.push_char_ngrams(token.as_bytes(), &mut ids);
            ids
        };
        let expected: Vec<u32> = ["<a", "<ab", "ab", "ab>", "b>"]
            .iter()
            .map(|g| 3 + hash(g.as_bytes()) % 7)
            .collect();
        assert_eq!(ngrams("ab"), expected);
        // "é" is one character: "<é" and "é>" only.
        assert_eq!(ngrams("é").len(), 3, "<é, <é>, é>");
        // In vocabulary: the word row, its n-grams, then "</s>" and one word bigram.
        let ids = model.input_ids(b"calm");
        assert_eq!(ids[0], 1);
        assert_eq!(ids.len(), 1 + ngrams("calm").len() + 1 + 1);
        let h = |s: &[u8]| hash(s) as i32 as i64 as u64;
        let bigram = h(b"calm").wrapping_mul(116_049_371).wrapping_add(h(EOS)) % 7;
        assert_eq!(*ids.last().unwrap(), 3 + bigram as u32);
    }

    #[test]
    fn unusable_files_name_their_cause() {
        let err = |bytes: &[u8]| load(bytes).unwrap_err().to_string();
        assert!(err(b"not a model at all").contains("magic"));
        let good = write(&plain(3));
        assert!(err(&good[..good.len() - 3]).contains("truncated"));
        assert!(err(&write(&plain(1))).contains("hierarchical softmax"));
        let mut quantized = plain(3);
        quantized.quantized = true;
        assert!(err(&write(&quantized)).contains("quantized"));
        // A matrix claiming more rows than the file holds fails before allocating them.
        let mut huge = plain(3);
        huge.bucket = i32::MAX;
        assert!(err(&write(&huge)).contains("truncated"));
        let mut misshapen = plain(3);
        misshapen.output.truncate(2);
        assert!(err(&write(&misshapen)).contains("output matrix is 1x2, expected 2x2"));
        let mut nan = plain(3);
        nan.output[0] = f32::NAN;
        assert!(err(&write(&nan)).contains("NaN"));
        let missing = FastTextClassifier::load(Path::new("/nonexistent/safety.bin"));
        assert!(matches!(missing, Err(LoadError::Io(_))));
    }
}
