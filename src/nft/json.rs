//! The JSON text of an nft batch, written straight from the `nftables`
//! crate's schema into one buffer (no `serde_json::Value` tree).
//!
//! The text is the one a `serde_json::Value` would print, which the
//! snapshots and every recorded policy hash pin: object keys sorted (a later
//! duplicate wins), and arrays under a `flags` key sorted (the crate keeps
//! flags in a HashSet, whose order changes from run to run) except inside
//! set elements. Where the crate's JSON is not nft's, nft's form is written:
//! `notrack` as an object, a map's value type as `verdict`, and a `counter`
//! statement on sets whose elements count.

use std::borrow::Cow;
use std::fmt;

use nftables::expr::{Expression, NamedExpression};
use nftables::schema::{Map, NfCmd, NfListObject, NfObject, Nftables, Set};
use serde::ser::{self, Serialize, SerializeStruct, Serializer};

/// The batch as compact JSON (what nft loads and the policy hash covers).
pub fn to_json(batch: &Nftables<'_>) -> String {
    write(batch, false)
}

/// The batch as JSON indented by two spaces (`compile --format json`).
pub fn to_json_pretty(batch: &Nftables<'_>) -> String {
    write(batch, true)
}

fn write(batch: &Nftables<'_>, pretty: bool) -> String {
    let mut w = Writer::new(pretty);
    Batch(batch).serialize(&mut w).expect("nftables schema always serializes");
    String::from_utf8(w.out).expect("the writer writes only UTF-8")
}

/// Whether a set's elements carry counters: nft then wants the set to
/// declare a `counter` statement.
pub fn counts_elements(s: &Set<'_>) -> bool {
    s.elem
        .iter()
        .flat_map(|e| e.iter())
        .any(|e| matches!(e, Expression::Named(NamedExpression::Elem(el)) if el.counter.is_some()))
}

struct Batch<'a, 'b>(&'a Nftables<'b>);

impl Serialize for Batch<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut batch = s.serialize_struct("Nftables", 1)?;
        batch.serialize_field("nftables", &Objects(&self.0.objects))?;
        batch.end()
    }
}

struct Objects<'a, 'b>(&'a [NfObject<'b>]);

impl Serialize for Objects<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(Object))
    }
}

/// One command, in nft's form where the crate's set and map types lack it.
struct Object<'a, 'b>(&'a NfObject<'b>);

impl Serialize for Object<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            NfObject::CmdObject(NfCmd::Add(NfListObject::Set(set))) if counts_elements(set) => {
                Tagged("add", Tagged("set", CountedSet { set, stmt: [ElementCounter { counter: () }] })).serialize(s)
            }
            NfObject::CmdObject(NfCmd::Add(NfListObject::Map(map))) => {
                Tagged("add", Tagged("map", VerdictMap { map, value_type: "verdict" })).serialize(s)
            }
            other => other.serialize(s),
        }
    }
}

/// `{tag: value}`, as the crate writes its enum variants.
struct Tagged<T>(&'static str, T);

impl<T: Serialize> Serialize for Tagged<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut object = s.serialize_struct("Tagged", 1)?;
        object.serialize_field(self.0, &self.1)?;
        object.end()
    }
}

/// A set with `"stmt": [{"counter": null}]` (the crate's `Set` has no field for it).
#[derive(serde::Serialize)]
struct CountedSet<'a, 'b> {
    #[serde(flatten)]
    set: &'a Set<'b>,
    stmt: [ElementCounter; 1],
}

#[derive(serde::Serialize)]
struct ElementCounter {
    counter: (),
}

/// Every map phantomc emits maps to verdicts, which the crate's set types
/// cannot name: this `map` key comes after the crate's own, so it wins.
#[derive(serde::Serialize)]
struct VerdictMap<'a, 'b> {
    #[serde(flatten)]
    map: &'a Map<'b>,
    #[serde(rename = "map")]
    value_type: &'static str,
}

#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// A JSON serializer that writes serde_json's `Value` text in one pass:
/// an object's fields are written as they come and, if their keys are out
/// of order, moved into order when the object closes.
struct Writer {
    out: Vec<u8>,
    pretty: bool,
    depth: usize,
    /// The written fields of every open object, innermost last.
    fields: Vec<Field>,
    /// The written items of every open `flags` array, innermost last.
    items: Vec<Item>,
    /// Where an object's or array's body goes while it is put in order.
    scratch: Vec<u8>,
    /// The next value is a `flags` field's: an array there is sorted.
    flags_value: bool,
    /// The next value is an item of a `flags` array: its string is kept.
    flag_item: bool,
    flag_string: Option<String>,
    /// How many `elem` fields enclose the value being written.
    in_elem: usize,
}

struct Field {
    key: Cow<'static, str>,
    /// Where the field's `"key": value` text starts and ends in `out`.
    start: usize,
    end: usize,
}

struct Item {
    string: Option<String>,
    start: usize,
    end: usize,
}

struct OpenObject {
    first_field: usize,
    body_start: usize,
}

struct OpenField {
    key: Cow<'static, str>,
    start: usize,
    elem: bool,
}

struct OpenArray {
    /// Index of the first item in `items` when this is a `flags` array.
    sorted_from: Option<usize>,
    body_start: usize,
    count: usize,
}

/// Which of the pending marks the value being started takes.
struct Context {
    flags_value: bool,
    flag_item: bool,
}

impl Writer {
    fn new(pretty: bool) -> Self {
        Writer {
            out: Vec::with_capacity(1 << 16),
            pretty,
            depth: 0,
            fields: Vec::new(),
            items: Vec::new(),
            scratch: Vec::new(),
            flags_value: false,
            flag_item: false,
            flag_string: None,
            in_elem: 0,
        }
    }

    /// Every value but an option's or a newtype's (which pass the marks on
    /// to what they hold) starts here.
    fn take_context(&mut self) -> Context {
        Context { flags_value: std::mem::take(&mut self.flags_value), flag_item: std::mem::take(&mut self.flag_item) }
    }

    fn newline(&mut self, depth: usize) {
        newline(&mut self.out, self.pretty, depth);
    }

    fn string(&mut self, s: &str, ctx: Context) {
        if ctx.flag_item {
            self.flag_string = Some(s.to_owned());
        }
        write_escaped(&mut self.out, s);
    }

    fn open_object(&mut self) -> OpenObject {
        self.out.push(b'{');
        self.depth += 1;
        OpenObject { first_field: self.fields.len(), body_start: self.out.len() }
    }

    /// `{"variant": ` before a tuple or struct variant's body.
    fn open_variant(&mut self, variant: &'static str) -> (OpenObject, OpenField) {
        self.take_context();
        let outer = self.open_object();
        let field = self.begin_field(&outer, variant.into());
        (outer, field)
    }

    fn begin_field(&mut self, object: &OpenObject, key: Cow<'static, str>) -> OpenField {
        if self.fields.len() > object.first_field {
            self.out.push(b',');
        }
        self.newline(self.depth);
        let start = self.out.len();
        write_escaped(&mut self.out, &key);
        self.out.extend_from_slice(if self.pretty { b": " } else { b":" });
        let elem = key == "elem";
        self.in_elem += usize::from(elem);
        self.flags_value = key == "flags" && self.in_elem == 0;
        OpenField { key, start, elem }
    }

    fn end_field(&mut self, field: OpenField) {
        self.in_elem -= usize::from(field.elem);
        self.flags_value = false;
        self.fields.push(Field { key: field.key, start: field.start, end: self.out.len() });
    }

    fn close_object(&mut self, object: OpenObject) {
        self.depth -= 1;
        let fields = &mut self.fields[object.first_field..];
        if fields.is_empty() {
            self.out.push(b'}');
            return;
        }
        if !fields.windows(2).all(|pair| key_order(&pair[0].key, &pair[1].key).is_lt()) {
            fields.sort_by(|a, b| key_order(&a.key, &b.key));
            // Of fields with one key, the last written stays.
            let kept = (0..fields.len())
                .filter(|&i| fields.get(i + 1).is_none_or(|next| next.key != fields[i].key))
                .map(|i| (fields[i].start, fields[i].end));
            reorder(&mut self.out, &mut self.scratch, self.pretty, self.depth + 1, object.body_start, kept);
        }
        self.fields.truncate(object.first_field);
        self.newline(self.depth);
        self.out.push(b'}');
    }

    fn open_array(&mut self, ctx: Context) -> OpenArray {
        self.out.push(b'[');
        self.depth += 1;
        let sorted_from = ctx.flags_value.then_some(self.items.len());
        OpenArray { sorted_from, body_start: self.out.len(), count: 0 }
    }

    fn item<T: Serialize + ?Sized>(&mut self, array: &mut OpenArray, value: &T) -> Result<(), Error> {
        if array.count > 0 {
            self.out.push(b',');
        }
        array.count += 1;
        self.newline(self.depth);
        let start = self.out.len();
        self.flag_item = array.sorted_from.is_some();
        value.serialize(&mut *self)?;
        self.flag_item = false;
        if array.sorted_from.is_some() {
            let string = self.flag_string.take();
            self.items.push(Item { string, start, end: self.out.len() });
        }
        Ok(())
    }

    fn close_array(&mut self, array: OpenArray) {
        self.depth -= 1;
        if array.count == 0 {
            self.out.push(b']');
            return;
        }
        if let Some(first) = array.sorted_from {
            let items = &mut self.items[first..];
            if !items.is_sorted_by(|a, b| a.string <= b.string) {
                items.sort_by(|a, b| a.string.cmp(&b.string));
                let pieces = items.iter().map(|i| (i.start, i.end));
                reorder(&mut self.out, &mut self.scratch, self.pretty, self.depth + 1, array.body_start, pieces);
            }
            self.items.truncate(first);
        }
        self.newline(self.depth);
        self.out.push(b']');
    }

    fn unsigned(&mut self, mut n: u128) {
        let mut digits = [0u8; 39];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.out.extend_from_slice(&digits[at..]);
    }

    fn signed(&mut self, n: i128) {
        if n < 0 {
            self.out.push(b'-');
        }
        self.unsigned(n.unsigned_abs());
    }
}

/// `a.cmp(b)` without a `memcmp` call: keys are short and mostly differ
/// in their first byte.
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    match a.iter().zip(b).find(|(x, y)| x != y) {
        Some((x, y)) => x.cmp(y),
        None => a.len().cmp(&b.len()),
    }
}

fn newline(out: &mut Vec<u8>, pretty: bool, depth: usize) {
    if pretty {
        out.push(b'\n');
        out.resize(out.len() + 2 * depth, b' ');
    }
}

/// Rewrites an object's or array's body, from `body_start`, as the given
/// pieces of it in that order, separated as members at `depth` are.
fn reorder(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    pretty: bool,
    depth: usize,
    body_start: usize,
    pieces: impl Iterator<Item = (usize, usize)>,
) {
    scratch.clear();
    scratch.extend_from_slice(&out[body_start..]);
    out.truncate(body_start);
    for (n, (start, end)) in pieces.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        newline(out, pretty, depth);
        out.extend_from_slice(&scratch[start - body_start..end - body_start]);
    }
}

/// A string as serde_json escapes it.
fn write_escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut plain_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => &[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]],
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain_from..i]);
        out.extend_from_slice(escape);
        plain_from = i + 1;
    }
    out.extend_from_slice(&bytes[plain_from..]);
    out.push(b'"');
}

/// Whether any byte is a control character, `"` or `\`; eight bytes at a
/// time (most strings need no escape, and this check was a tenth of the
/// writer's instructions byte by byte).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    // Some byte of `x` is below `n` (n <= 128).
    let any_below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH != 0;
    let any_equal = |x: u64, b: u8| any_below(x ^ (ONES * u64::from(b)), 1);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let x = u64::from_ne_bytes(word.try_into().expect("eight bytes"));
        if any_below(x, 0x20) || any_equal(x, b'"') || any_equal(x, b'\\') {
            return true;
        }
    }
    words.remainder().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

const HEX: &[u8; 16] = b"0123456789abcdef";

pub struct ObjectWriter<'a> {
    w: &'a mut Writer,
    object: OpenObject,
    /// A map's key, written, waiting for its value.
    key: Option<OpenField>,
    /// The `{variant: ...}` around a struct variant's fields.
    variant: Option<(OpenObject, OpenField)>,
}

pub struct ArrayWriter<'a> {
    w: &'a mut Writer,
    array: OpenArray,
    /// The `{variant: ...}` around a tuple variant's items.
    variant: Option<(OpenObject, OpenField)>,
}

impl ObjectWriter<'_> {
    fn field<T: Serialize + ?Sized>(&mut self, key: Cow<'static, str>, value: &T) -> Result<(), Error> {
        let field = self.w.begin_field(&self.object, key);
        value.serialize(&mut *self.w)?;
        self.w.end_field(field);
        Ok(())
    }

    fn close(self) {
        self.w.close_object(self.object);
        if let Some((outer, field)) = self.variant {
            self.w.end_field(field);
            self.w.close_object(outer);
        }
    }
}

impl ArrayWriter<'_> {
    fn close(self) {
        self.w.close_array(self.array);
        if let Some((outer, field)) = self.variant {
            self.w.end_field(field);
            self.w.close_object(outer);
        }
    }
}

/// Integers are written as the widest of their sign.
macro_rules! forward_integers {
    ($($($method:ident($t:ty))* => $to:ident;)*) => {$($(
        fn $method(self, v: $t) -> Result<(), Error> {
            self.$to(v.into())
        }
    )*)*};
}

impl<'a> Serializer for &'a mut Writer {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = ArrayWriter<'a>;
    type SerializeTuple = ArrayWriter<'a>;
    type SerializeTupleStruct = ArrayWriter<'a>;
    type SerializeTupleVariant = ArrayWriter<'a>;
    type SerializeMap = ObjectWriter<'a>;
    type SerializeStruct = ObjectWriter<'a>;
    type SerializeStructVariant = ObjectWriter<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.take_context();
        self.out.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    forward_integers! {
        serialize_i8(i8) serialize_i16(i16) serialize_i32(i32) serialize_i64(i64) => serialize_i128;
        serialize_u8(u8) serialize_u16(u16) serialize_u32(u32) serialize_u64(u64) => serialize_u128;
    }
    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        self.take_context();
        self.signed(v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        self.take_context();
        self.unsigned(v);
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        // A `Value` holds every float as an f64.
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.take_context();
        serde_json::to_writer(&mut self.out, &v).map_err(|e| Error(e.to_string()))
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        let ctx = self.take_context();
        self.string(v, ctx);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.take_context();
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(self, name: &'static str, _index: u32, variant: &'static str) -> Result<(), Error> {
        // The crate writes `notrack` as a bare string, which nft refuses
        // ("expected object"); nft's form is `{"notrack": null}`.
        if name == "Statement" && variant == "notrack" {
            return self.serialize_newtype_variant(name, _index, variant, &());
        }
        let ctx = self.take_context();
        self.string(variant, ctx);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _name: &'static str, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        let mut object = self.serialize_struct(variant, 1)?;
        object.field(variant.into(), value)?;
        object.close();
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<ArrayWriter<'a>, Error> {
        let ctx = self.take_context();
        let array = self.open_array(ctx);
        Ok(ArrayWriter { w: self, array, variant: None })
    }
    fn serialize_tuple(self, len: usize) -> Result<ArrayWriter<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<ArrayWriter<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<ArrayWriter<'a>, Error> {
        let variant = self.open_variant(variant);
        let ctx = self.take_context();
        let array = self.open_array(ctx);
        Ok(ArrayWriter { w: self, array, variant: Some(variant) })
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<ObjectWriter<'a>, Error> {
        self.take_context();
        let object = self.open_object();
        Ok(ObjectWriter { w: self, object, key: None, variant: None })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<ObjectWriter<'a>, Error> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<ObjectWriter<'a>, Error> {
        let variant = self.open_variant(variant);
        self.take_context();
        let object = self.open_object();
        Ok(ObjectWriter { w: self, object, key: None, variant: Some(variant) })
    }
}

/// The array kinds differ only in their method's name.
macro_rules! array_writer {
    ($($kind:ident::$method:ident),*) => {$(
        impl ser::$kind for ArrayWriter<'_> {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                self.w.item(&mut self.array, value)
            }
            fn end(self) -> Result<(), Error> {
                self.close();
                Ok(())
            }
        }
    )*};
}

array_writer!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for ObjectWriter<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        // As serde_json's `Value` takes map keys: strings, and numbers and
        // booleans as their text.
        let key = match serde_json::to_value(key).map_err(|e| Error(e.to_string()))? {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => return Err(Error(format!("a map key must be a string, not {other}"))),
        };
        self.key = Some(self.w.begin_field(&self.object, key.into()));
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let field = self.key.take().ok_or_else(|| Error("a map value without its key".into()))?;
        value.serialize(&mut *self.w)?;
        self.w.end_field(field);
        Ok(())
    }
    fn end(self) -> Result<(), Error> {
        self.close();
        Ok(())
    }
}

/// A struct and a struct variant write their fields alike.
macro_rules! struct_writer {
    ($($kind:ident),*) => {$(
        impl ser::$kind for ObjectWriter<'_> {
            type Ok = ();
            type Error = Error;
            fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
                self.field(key.into(), value)
            }
            fn end(self) -> Result<(), Error> {
                self.close();
                Ok(())
            }
        }
    )*};
}

struct_writer!(SerializeStruct, SerializeStructVariant);

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use nftables::expr::Elem;
    use nftables::schema::{SetFlag, SetType, SetTypeValue};
    use nftables::stmt::{Counter, Statement};
    use nftables::types::NfFamily;

    use super::*;

    fn compact<T: Serialize>(value: &T) -> String {
        let mut w = Writer::new(false);
        value.serialize(&mut w).unwrap();
        String::from_utf8(w.out).unwrap()
    }

    #[derive(serde::Serialize)]
    struct Sample {
        zeta: u32,
        flags: Vec<&'static str>,
        alpha: Option<i64>,
        elem: Inner,
        empty: Vec<u8>,
        nothing: Inner2,
        text: &'static str,
        #[serde(flatten)]
        later: Later,
    }

    #[derive(serde::Serialize)]
    struct Inner {
        flags: Vec<&'static str>,
    }

    #[derive(serde::Serialize)]
    struct Inner2 {}

    #[derive(serde::Serialize)]
    struct Later {
        zeta: &'static str,
    }

    #[test]
    fn keys_and_flags_are_sorted_but_not_inside_elements_and_a_later_key_wins() {
        let sample = Sample {
            zeta: 1,
            flags: vec!["timeout", "interval", "constant"],
            alpha: Some(-5),
            elem: Inner { flags: vec!["b", "a"] },
            empty: vec![],
            nothing: Inner2 {},
            text: "q\"\n\u{1}é",
            later: Later { zeta: "later" },
        };
        assert_eq!(
            compact(&sample),
            r#"{"alpha":-5,"elem":{"flags":["b","a"]},"empty":[],"flags":["constant","interval","timeout"],"nothing":{},"text":"q\"\n\u0001é","zeta":"later"}"#
        );
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let all: String = (0..0x80u8).map(char::from).chain("é€😀\u{2028}".chars()).collect();
        // Each escape at every place of a string longer than two words.
        let placed = ['"', '\\', '\n', '\u{1f}', '\u{7f}', '~']
            .into_iter()
            .flat_map(|c| (0..20).map(move |at| (0..20).map(|i| if i == at { c } else { 'a' }).collect::<String>()));
        for s in [all, String::new(), "plain".into(), "\\\"".into(), "tab\there".into()].into_iter().chain(placed) {
            let mut out = Vec::new();
            write_escaped(&mut out, &s);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap());
        }
    }

    /// Every example policy's batch prints as serde_json prints the same
    /// text read back as a `Value`: keys in its order, its spacing.
    #[test]
    fn example_batches_print_as_serde_json_values_do() {
        let paths = ["webserver", "bastion", "router", "feed-blocklist", "adaptive", "router-hosts"]
            .map(|name| format!("policies/{name}.pf"))
            .into_iter()
            .chain(["testdata/language/constructs.pf".to_string(), "testdata/language/flowtable.pf".to_string()]);
        for path in paths {
            let compiled = crate::ir::compile_file(path.as_ref()).unwrap_or_else(|e| panic!("{path}: {e:?}"));
            for table in [
                crate::nft::build(&compiled.ruleset, &Default::default()),
                crate::nft::emit::build_with(&compiled.ruleset, &Default::default()),
            ] {
                let batch = table.replace_batch();
                let text = to_json(&batch);
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(value.to_string(), text, "{path}");
                let pretty = to_json_pretty(&batch);
                assert_eq!(serde_json::to_string_pretty(&value).unwrap(), pretty, "{path}");
            }
        }
    }

    #[test]
    fn nft_forms_replace_the_crates_notrack_map_type_and_set_counters() {
        let counted = Expression::Named(NamedExpression::Elem(Elem {
            val: Box::new(Expression::String("10.0.0.1".into())),
            timeout: None,
            expires: None,
            comment: None,
            counter: Some(Counter::Anonymous(None)),
        }));
        let set = Set {
            name: "counted".into(),
            flags: Some(HashSet::from([SetFlag::Timeout, SetFlag::Interval, SetFlag::Constant])),
            elem: Some(vec![counted].into()),
            ..Default::default()
        };
        let map = Map {
            family: NfFamily::INet,
            table: "t".into(),
            name: "m".into(),
            handle: None,
            set_type: SetTypeValue::Single(SetType::Ipv4Addr),
            map: SetTypeValue::Single(SetType::Mark),
            policy: None,
            flags: None,
            elem: None,
            timeout: None,
            gc_interval: None,
            size: None,
            comment: None,
        };
        let rule = nftables::schema::Rule {
            expr: vec![Statement::Notrack, Statement::Accept(None)].into(),
            ..Default::default()
        };
        let add = |o| NfObject::CmdObject(NfCmd::Add(o));
        let batch = Nftables {
            objects: vec![
                add(NfListObject::Set(Box::new(set))),
                add(NfListObject::Map(Box::new(map))),
                add(NfListObject::Rule(rule)),
            ]
            .into(),
        };
        let v: serde_json::Value = serde_json::from_str(&to_json(&batch)).unwrap();
        let at = |p: &str| v.pointer(p).unwrap_or_else(|| panic!("no {p} in {v}")).to_string();
        assert_eq!(at("/nftables/0/add/set/stmt"), r#"[{"counter":null}]"#);
        assert_eq!(at("/nftables/0/add/set/flags"), r#"["constant","interval","timeout"]"#);
        assert_eq!(at("/nftables/0/add/set/elem/0/elem/counter"), "null");
        assert_eq!(at("/nftables/1/add/map/map"), r#""verdict""#);
        assert_eq!(at("/nftables/1/add/map/type"), r#""ipv4_addr""#);
        assert_eq!(at("/nftables/2/add/rule/expr"), r#"[{"notrack":null},{"accept":null}]"#);
    }
}
