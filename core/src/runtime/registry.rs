//! The registry of remote functions (docs/ARCHITECTURE.md, decision 2).
//!
//! `#[cohort::remote]` submits one [`RemoteEntry`] per function at link time (with `inventory`).
//! A function's registered name is its Rust path as the compiler spells it
//! (`std::any::type_name` of the function item, e.g. `my_app::kernels::step`); since every
//! process runs the same binary, the caller computes the same name from the function it passes
//! to `remotecall` and the callee finds it in its own table.

use crate::wire::codec::{self as wire, Body};
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::any::Any;
use std::marker::PhantomData;
use std::sync::OnceLock;

pub use crate::runtime::store::{AnyBox, EncodeFn};
/// Turns a constructed value into a channel store (for `RemoteChannel::from_fn`).
pub type AsChannelFn = fn(AnyBox) -> Box<dyn crate::runtime::store::ErasedChannel>;

/// How a registered function failed before or while producing a value (panics are caught by
/// the runtime around the call).
#[derive(Debug)]
#[non_exhaustive]
pub enum CallError {
    /// The arguments did not decode into the function's parameter types.
    Args(String),
    /// The function returned `Err`; its `Display`.
    Returned(String),
}

/// One registered function. Built by `#[cohort::remote]`; not meant to be written by hand.
pub struct RemoteEntry {
    /// The registered name.
    pub name: fn() -> &'static str,
    /// Decodes the arguments and runs the function.
    pub call: fn(&[u8]) -> Result<AnyBox, CallError>,
    /// Runs the function on arguments moved in from this process (no serialization).
    pub call_local: fn(AnyBox) -> Result<AnyBox, CallError>,
    /// Encoder of the result, when the result type is `Serialize`.
    pub encoder: fn() -> Option<EncodeFn>,
    /// Channel conversion, when the result type implements `AbstractChannel`.
    pub as_channel: fn() -> Option<AsChannelFn>,
}

inventory::collect!(RemoteEntry);

/// The registered functions by the bytes of their names (an arriving name is looked up before
/// its bytes are checked as UTF-8).
fn table() -> &'static FxHashMap<&'static [u8], &'static RemoteEntry> {
    static TABLE: OnceLock<FxHashMap<&'static [u8], &'static RemoteEntry>> = OnceLock::new();
    TABLE.get_or_init(|| {
        crate::wire::proto::resolve_names_with(known_name);
        inventory::iter::<RemoteEntry>
            .into_iter()
            .map(|e| ((e.name)().as_bytes(), e))
            .collect()
    })
}

/// The registered name these bytes spell, as the registry's own string: what an arriving name
/// decodes as.
fn known_name(name: &[u8]) -> Option<&'static str> {
    table().get(name).map(|e| (e.name)())
}

/// The entry registered under `name`.
pub fn lookup(name: &str) -> Option<&'static RemoteEntry> {
    table().get(name.as_bytes()).copied()
}

/// Names of every registered function, sorted.
pub fn registered_names() -> Vec<&'static str> {
    let mut v: Vec<_> = table().values().map(|e| (e.name)()).collect();
    v.sort_unstable();
    v
}

/// A function that can be called remotely with the argument tuple `Args`: one marked
/// `#[cohort::remote]`, which implements this trait for it.
///
/// Passing an unmarked function or a closure where a `RemoteFn` is expected is a compile-time
/// error that says to add the attribute. (Julia can send any function; cohort finds functions
/// by name in the same binary on every process, so only registered ones can travel, and what a
/// closure would capture travels as an argument.)
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a remote function taking `{Args}`",
    label = "not a `#[cohort::remote]` function for these arguments",
    note = "add `#[cohort::remote]` to the function (a free function; closures cannot travel: pass what they capture as arguments)",
    note = "the arguments travel as a tuple of the function's parameter types, e.g. `(x,)` for one"
)]
pub trait RemoteFn<Args>: Copy + Send + Sync + 'static {
    /// The value the call produces: the function's return type, or `T` for one returning
    /// `Result<T, E>` (an `Err` becomes [`Error::Remote`](crate::base::error::Error::Remote)).
    type Output: Send + 'static;
    /// The registered name of this function.
    fn name(&self) -> &'static str;
}

/// Support for the code `#[cohort::remote]` generates.
#[doc(hidden)]
pub mod support {
    use super::*;

    /// Autoref-specialization probe on a concrete type.
    pub struct Probe<T>(pub PhantomData<T>);

    fn encode_as<T: Serialize + Send + 'static>(
        v: &(dyn Any + Send),
    ) -> Result<Body<'_>, wire::CodecError> {
        let v = v
            .downcast_ref::<T>()
            .ok_or_else(|| wire::CodecError::new("result type mismatch"))?;
        wire::encode(v)
    }

    /// Chosen when the type is `Serialize`.
    pub trait EncodeViaSerde {
        /// The encoder.
        fn encoder(&self) -> Option<EncodeFn>;
    }
    impl<T: Serialize + Send + 'static> EncodeViaSerde for Probe<T> {
        fn encoder(&self) -> Option<EncodeFn> {
            Some(encode_as::<T>)
        }
    }
    /// Fallback when it is not.
    pub trait EncodeNone {
        /// No encoder.
        fn encoder(&self) -> Option<EncodeFn>;
    }
    impl<T> EncodeNone for &Probe<T> {
        fn encoder(&self) -> Option<EncodeFn> {
            None
        }
    }

    fn channel_as<C: crate::runtime::store::AbstractChannel>(
        v: AnyBox,
    ) -> Box<dyn crate::runtime::store::ErasedChannel> {
        let c = v.downcast::<C>().expect("constructor result type");
        Box::new(crate::runtime::store::Typed(*c))
    }
    /// Chosen when the type is a channel.
    pub trait ChannelVia {
        /// The conversion.
        fn as_channel(&self) -> Option<AsChannelFn>;
    }
    impl<T: crate::runtime::store::AbstractChannel> ChannelVia for Probe<T> {
        fn as_channel(&self) -> Option<AsChannelFn> {
            Some(channel_as::<T>)
        }
    }
    /// Fallback when it is not.
    pub trait ChannelNone {
        /// No conversion.
        fn as_channel(&self) -> Option<AsChannelFn>;
    }
    impl<T> ChannelNone for &Probe<T> {
        fn as_channel(&self) -> Option<AsChannelFn> {
            None
        }
    }

    /// The return type of a fallible remote function: its `Ok` value travels, its `Err` as a
    /// message.
    pub trait Fallible {
        /// What travels.
        type Ok: Send + 'static;
        /// The value, or the error's message.
        fn split(self) -> Result<Self::Ok, String>;
    }
    impl<T: Send + 'static, E: std::fmt::Display> Fallible for Result<T, E> {
        type Ok = T;
        fn split(self) -> Result<T, String> {
            self.map_err(|e| error_message(&e))
        }
    }

    /// `e`'s message; with `{:#}`, the whole chain of an `anyhow`-style error.
    fn error_message<E: std::fmt::Display>(e: &E) -> String {
        format!("{e:#}")
    }

    /// Decodes an argument tuple.
    pub fn decode_args<T: serde::de::DeserializeOwned + 'static>(b: &[u8]) -> Result<T, CallError> {
        wire::decode(b).map_err(|e| CallError::Args(e.to_string()))
    }

    /// Takes a locally moved argument tuple.
    pub fn local_args<T: 'static>(b: AnyBox) -> Result<T, CallError> {
        b.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| CallError::Args("argument types do not match the function".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proto::{decode_msg, encode_msg, Mode, Msg};

    #[cohort_macros::remote(crate = crate)]
    fn twice(x: u64) -> u64 {
        2 * x
    }

    /// A registered name that arrives is the table's own string, not a copy (nothing allocated
    /// for it per call); the function is found by it.
    #[test]
    fn an_arriving_registered_name_is_the_registrys_own_string() {
        let name = twice.name();
        assert!(lookup(name).is_some());
        let sent = Msg::Call {
            func: name.to_string().into(),
            mode: Mode::Fetch,
        };
        match decode_msg(&encode_msg(&sent)).unwrap() {
            Msg::Call { func, .. } => {
                assert_eq!(&*func, name);
                assert!(std::ptr::eq(func.as_ptr(), name.as_ptr()));
                assert!(std::ptr::eq(lookup(&func).unwrap(), lookup(name).unwrap()));
            }
            other => panic!("expected a call, got {other:?}"),
        }
        assert!(lookup("cohort_core::runtime::registry::tests::not_registered").is_none());
    }
}
