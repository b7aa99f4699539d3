//! `#[cohort::remote]`: registers a function so that other processes can call it by name.
//!
//! The function stays an ordinary function; the attribute adds a registry entry (decoder of the
//! argument tuple, caller, encoder of the result) that `cohort` finds at start-up.

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::{parse_macro_input, FnArg, ItemFn, ReturnType, Type};

/// Registers a free function for remote calls: `remotecall(f, pid, (args,))`.
///
/// Its parameters must be `serde::de::DeserializeOwned + Send + 'static` and its result
/// `serde::Serialize + Send + 'static` (or a channel type for `RemoteChannel::from_fn`). A
/// function returning `Result<T, E>` with `E: Display` reports `Err` to the caller as a
/// `RemoteException`. Generic, async and method functions are refused.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    let krate: syn::Path = if attr.is_empty() {
        syn::parse_quote!(::cohort)
    } else {
        let meta = parse_macro_input!(attr as syn::MetaNameValue);
        if !meta.path.is_ident("crate") {
            return syn::Error::new_spanned(meta.path, "expected `crate = path`")
                .to_compile_error()
                .into();
        }
        match meta.value {
            syn::Expr::Path(p) => p.path,
            other => {
                return syn::Error::new_spanned(other, "expected a path")
                    .to_compile_error()
                    .into()
            }
        }
    };
    let func = parse_macro_input!(item as ItemFn);
    match expand(&krate, func) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(krate: &syn::Path, func: ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let sig = &func.sig;
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "#[cohort::remote] functions cannot be generic: every process must find the same concrete function by name",
        ));
    }
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new_spanned(
            a,
            "#[cohort::remote] functions cannot be async",
        ));
    }
    let name = &sig.ident;
    let mut tys: Vec<Type> = Vec::new();
    for arg in &sig.inputs {
        match arg {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new_spanned(
                    r,
                    "#[cohort::remote] works on free functions, not methods",
                ))
            }
            FnArg::Typed(p) => {
                if let Type::Reference(r) = &*p.ty {
                    return Err(syn::Error::new_spanned(
                        r,
                        "arguments of a #[cohort::remote] function travel by value: take an owned type",
                    ));
                }
                tys.push((*p.ty).clone());
            }
        }
    }
    let idents: Vec<_> = (0..tys.len()).map(|i| format_ident!("__a{}", i)).collect();
    let ret: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, t) => (**t).clone(),
    };
    let is_result = matches!(&ret, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Result"));
    let check = if is_result {
        quote! {
            if let ::std::option::Option::Some(m) = #krate::__private::ResultLike::err_message(&__r) {
                return ::std::result::Result::Err(#krate::__private::CallError::Returned(m));
            }
        }
    } else {
        quote! {}
    };
    let p = krate;
    Ok(quote! {
        #func

        const _: () = {
            #[allow(unused_imports)]
            use #p::__private::{EncodeViaSerde as _, EncodeNone as _, ChannelVia as _, ChannelNone as _};
            fn __name() -> &'static str {
                ::std::any::type_name_of_val(&#name)
            }
            fn __run((#(#idents,)*): (#(#tys,)*)) -> ::std::result::Result<#p::__private::AnyBox, #p::__private::CallError> {
                let __r: #ret = #name(#(#idents),*);
                #check
                ::std::result::Result::Ok(::std::boxed::Box::new(__r))
            }
            fn __call(b: &[u8]) -> ::std::result::Result<#p::__private::AnyBox, #p::__private::CallError> {
                __run(#p::__private::decode_args::<(#(#tys,)*)>(b)?)
            }
            fn __call_local(b: #p::__private::AnyBox) -> ::std::result::Result<#p::__private::AnyBox, #p::__private::CallError> {
                __run(#p::__private::local_args::<(#(#tys,)*)>(b)?)
            }
            fn __encoder() -> ::std::option::Option<#p::__private::EncodeFn> {
                (&#p::__private::Probe::<#ret>(::std::marker::PhantomData)).encoder()
            }
            fn __as_channel() -> ::std::option::Option<#p::__private::AsChannelFn> {
                (&#p::__private::Probe::<#ret>(::std::marker::PhantomData)).as_channel()
            }
            #p::__private::inventory::submit! {
                #p::__private::RemoteEntry {
                    name: __name,
                    call: __call,
                    call_local: __call_local,
                    encoder: __encoder,
                    as_channel: __as_channel,
                }
            }
        };
    })
}
