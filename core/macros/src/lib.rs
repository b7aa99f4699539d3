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
/// `serde::Serialize + Send + 'static` (or a channel type for `RemoteChannel::from_fn`).
///
/// **Fallible functions.** A function returning `Result<T, E>` (any type spelled `Result` or
/// ending in `Result`, such as `anyhow::Result<T>` or `io::Result<T>`) with `E: Display` is a
/// remote function with result `T`: its `Ok` value travels, and an `Err` reaches the caller as
/// `Error::Remote` carrying `E`'s message (`E` itself never travels, so it need not be
/// serializable), so callers write `fetch()?`.
///
/// **What the name becomes.** In Julia any function can be called remotely; in Rust a plain
/// function cannot be told apart from a marked one by its type, so the attribute turns the name
/// into a zero-sized value of a type of its own (a unit struct) that implements `RemoteFn` and
/// dereferences to the function: `f(x)` still calls it here, `*f` is the plain `fn` pointer
/// (for `iter.map(*f)`), and passing an unmarked function or a closure to `remotecall` is a
/// compile-time error. Like any unit struct, the name cannot be reused for a local variable
/// in its scope (`let f = ...` is error E0530).
///
/// Generic, async and `unsafe` functions, methods and associated functions are refused: every
/// process must find the same concrete function by a path, and the attribute works on free
/// functions (module items) only.
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
    if let Some(u) = &sig.unsafety {
        return Err(syn::Error::new_spanned(
            u,
            "#[cohort::remote] functions cannot be unsafe: a remote caller cannot uphold their contract",
        ));
    }
    let name = &sig.ident;
    let mut tys: Vec<Type> = Vec::new();
    for arg in &sig.inputs {
        match arg {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new_spanned(
                    r,
                    "#[cohort::remote] works on free functions, not methods: write a free function that takes the value as an argument",
                ))
            }
            FnArg::Typed(p) => {
                if let Type::Reference(r) = &*p.ty {
                    return Err(syn::Error::new_spanned(
                        r,
                        "arguments of a #[cohort::remote] function travel by value: take an owned type",
                    ));
                }
                if let Type::ImplTrait(t) = &*p.ty {
                    return Err(syn::Error::new_spanned(
                        t,
                        "#[cohort::remote] functions cannot be generic: take a concrete type",
                    ));
                }
                if mentions_self(&p.ty) {
                    return Err(associated(&p.ty));
                }
                tys.push((*p.ty).clone());
            }
        }
    }
    let ret: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, t) => (**t).clone(),
    };
    if mentions_self(&ret) {
        return Err(associated(&ret));
    }
    let is_result = matches!(&ret, Type::Path(p) if p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident.to_string().ends_with("Result")));
    let p = krate;
    // The value that travels, and how a return value becomes it (or an error message).
    let (output, split) = if is_result {
        (
            quote! { <#ret as #p::__private::Fallible>::Ok },
            quote! { #p::__private::Fallible::split(__r).map_err(#p::__private::CallError::Returned)? },
        )
    } else {
        (quote! { #ret }, quote! { __r })
    };
    let idents: Vec<_> = (0..tys.len()).map(|i| format_ident!("__a{}", i)).collect();
    let inner = format_ident!("__cohort_remote_{}", name);
    let vis = &func.vis;
    let cfgs: Vec<&syn::Attribute> = func
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .collect();
    let docs: Vec<&syn::Attribute> = func
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc") || a.path().is_ident("deprecated"))
        .collect();
    let mut inner_fn = func.clone();
    inner_fn.sig.ident = inner.clone();
    inner_fn.vis = syn::Visibility::Inherited;
    inner_fn
        .attrs
        .retain(|a| !a.path().is_ident("doc") && !a.path().is_ident("deprecated"));
    Ok(quote! {
        #(#docs)*
        #(#cfgs)*
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug)]
        #vis struct #name;

        #[doc(hidden)]
        #[allow(non_snake_case)]
        #inner_fn

        #(#cfgs)*
        impl ::std::ops::Deref for #name {
            type Target = fn(#(#tys),*) -> #ret;
            fn deref(&self) -> &Self::Target {
                const F: fn(#(#tys),*) -> #ret = #inner;
                &F
            }
        }

        #(#cfgs)*
        impl #p::RemoteFn<(#(#tys,)*)> for #name {
            type Output = #output;
            fn name(&self) -> &'static str {
                ::std::any::type_name::<#name>()
            }
        }

        #(#cfgs)*
        const _: () = {
            #[allow(unused_imports)]
            use #p::__private::{EncodeViaSerde as _, EncodeNone as _, ChannelVia as _, ChannelNone as _};
            fn __name() -> &'static str {
                ::std::any::type_name::<#name>()
            }
            fn __run((#(#idents,)*): (#(#tys,)*)) -> ::std::result::Result<#p::__private::AnyBox, #p::__private::CallError> {
                let __r: #ret = #inner(#(#idents),*);
                let __v: #output = #split;
                ::std::result::Result::Ok(::std::boxed::Box::new(__v))
            }
            fn __call(b: &[u8]) -> ::std::result::Result<#p::__private::AnyBox, #p::__private::CallError> {
                __run(#p::__private::decode_args::<(#(#tys,)*)>(b)?)
            }
            fn __call_local(b: #p::__private::AnyBox) -> ::std::result::Result<#p::__private::AnyBox, #p::__private::CallError> {
                __run(#p::__private::local_args::<(#(#tys,)*)>(b)?)
            }
            fn __encoder() -> ::std::option::Option<#p::__private::EncodeFn> {
                (&#p::__private::Probe::<#output>(::std::marker::PhantomData)).encoder()
            }
            fn __as_channel() -> ::std::option::Option<#p::__private::AsChannelFn> {
                (&#p::__private::Probe::<#output>(::std::marker::PhantomData)).as_channel()
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

/// Whether a type names `Self` (only an associated function can).
fn mentions_self(t: &Type) -> bool {
    fn walk(ts: proc_macro2::TokenStream) -> bool {
        ts.into_iter().any(|tt| match tt {
            proc_macro2::TokenTree::Ident(i) => i == "Self",
            proc_macro2::TokenTree::Group(g) => walk(g.stream()),
            _ => false,
        })
    }
    walk(quote!(#t))
}

fn associated(t: &Type) -> syn::Error {
    syn::Error::new_spanned(
        t,
        "#[cohort::remote] works on free functions, not associated functions: move it out of the `impl` block (every process finds a remote function by its module path)",
    )
}
