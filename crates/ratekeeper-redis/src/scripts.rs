//! The operations as one Redis function library: `common.lua` (keys,
//! capacity, grants, the queue), then one function per operation, each run
//! atomically by Redis.
//!
//! A library is loaded once, where a script would define the shared code
//! again on every call (about 6 µs each). The library's name and its
//! functions' names carry a digest of its code, so instances of different
//! ratekeeper versions on one Redis each call their own.
//!
//! On a cluster the functions publish with `SPUBLISH` (sharded pub/sub:
//! the message stays on the node of the partition's slot), elsewhere with
//! `PUBLISH`.

/// Every operation, once: its name, its arguments and its Lua file. Each
/// makes a field of [`Scripts`], a function of the library named after it,
/// and that function's arguments: locals `arg_NAME`, set from `ARGV` in the
/// order listed (after the two every call has: the partition's key prefix
/// and the clock). Callers pass the arguments with their names, and a
/// debug build checks them against this list on every call.
macro_rules! operations {
    ($($operation:ident($($arg:ident),*) = $file:literal,)*) => {
        /// Every operation: its name, its Lua body and its argument names.
        const OPERATIONS: &[(&str, &str, &[&str])] = &[
            $((stringify!($operation), include_str!($file), &[$(stringify!($arg)),*]),)*
        ];

        /// The library's code and every operation's function.
        pub struct Scripts {
            /// What `FUNCTION LOAD` takes.
            pub library: String,
            $(pub $operation: Function,)*
        }

        impl Scripts {
            fn with_functions(library: String, function: impl Fn(&'static str, &'static [&'static str]) -> Function) -> Self {
                Scripts {
                    library,
                    $($operation: function(stringify!($operation), &[$(stringify!($arg)),*]),)*
                }
            }
        }
    };
}

operations! {
    create(name, slots, decay, active, has_description, description, max_share, max_all, adaptive) = "lua/create.lua",
    update(name, slots, decay, active, description_change, description, max_share, max_all, adaptive) = "lua/update.lua",
    delete(name) = "lua/delete.lua",
    reset(name) = "lua/reset.lua",
    pause(name, end_kind, end_us, reason, reporter) = "lua/pause.lua",
    resume(name) = "lua/resume.lua",
    lower(name) = "lua/lower.lua",
    acquire(names, occupy, mode, ttl_us, has_holder, holder, create_if_missing, token, try_once, instance, deadline_at, check_only, whole) = "lua/acquire.lua",
    cancel(token, reason) = "lua/cancel.lua",
    release(id) = "lua/release.lua",
    renew(id, ttl_us) = "lua/renew.lua",
    tick() = "lua/tick.lua",
    status(token) = "lua/status.lua",
    read(what, name, query) = "lua/read.lua",
    share(template, change) = "lua/share.lua",
}

/// One operation's function: its name in the library, and the names of
/// the arguments it takes, in order.
pub struct Function {
    name: String,
    args: &'static [&'static str],
}

impl Function {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks (in debug builds) that `given` names this function's
    /// arguments, in order.
    pub fn check_args(&self, given: &[(&str, &str)]) {
        debug_assert!(
            given
                .iter()
                .map(|(name, _)| *name)
                .eq(self.args.iter().copied()),
            "{} takes {:?}, was given {:?}",
            self.name,
            self.args,
            given.iter().map(|(name, _)| name).collect::<Vec<_>>()
        );
    }
}

impl Scripts {
    pub fn new(sharded: bool) -> Self {
        let publish = if sharded { "SPUBLISH" } else { "PUBLISH" };
        let body = library_body().replace("@PUBLISH@", publish).replace(
            "@INSTANCE_TTL_MS@",
            &crate::INSTANCE_TTL.as_millis().to_string(),
        );
        let digest = redis::Script::new(&body).get_hash().to_owned();
        let tag = digest[..12].to_owned();
        let library = format!(
            "#!lua name=ratekeeper_{tag}\n{}",
            body.replace("@TAG@", &tag)
        );
        Scripts::with_functions(library, |operation, args| Function {
            name: format!("ratekeeper_{tag}_{operation}"),
            args,
        })
    }
}

/// The library without its header, function names tagged `@TAG@`.
fn library_body() -> String {
    let mut code = String::from(include_str!("lua/common.lua"));
    for (operation, body, args) in OPERATIONS {
        // `local arg_a, arg_b = ARGV[3], ARGV[4]`: the arguments by name.
        let arguments = if args.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = args.iter().map(|a| format!("arg_{a}")).collect();
            let values: Vec<String> = (3..3 + args.len()).map(|i| format!("ARGV[{i}]")).collect();
            format!("local {} = {}\n", names.join(", "), values.join(", "))
        };
        code.push_str(&format!(
            "\nredis.register_function('ratekeeper_@TAG@_{operation}', function(KEYS, ARGV)\n\
             begin(ARGV)\n{arguments}{body}\nend)\n"
        ));
    }
    code
}

#[cfg(test)]
mod argument_tests {
    use super::*;

    #[test]
    fn every_operation_uses_each_argument_it_names_and_no_other() {
        for (operation, body, args) in OPERATIONS {
            assert!(
                !body.contains("ARGV["),
                "{operation}.lua reads ARGV by position; use its arg_ locals"
            );
            for arg in *args {
                assert!(
                    body.contains(&format!("arg_{arg}")),
                    "{operation}.lua never uses its argument {arg}"
                );
            }
            for used in body.split("arg_").skip(1) {
                let name: String = used
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    args.contains(&name.as_str()),
                    "{operation}.lua uses arg_{name}, which it is not given"
                );
            }
        }
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "takes [\"id\"]")]
    fn a_call_with_misnamed_arguments_is_stopped() {
        Scripts::new(false).release.check_args(&[("lease", "0")]);
    }
}
