//! [`CallError`]: why calling a plugin method with JSON failed, with the stable code that the
//! REST API and jobs report for it.

use plugsconc_host::HostError;

use super::transcode::TranscodeError;

/// Why a plugin call failed. The Display is the message a caller sees; details that are the
/// operator's (paths, exit statuses, stderr) go to the log and the plugin's status instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No plugin of that name in the catalog.
    #[error("no plugin named {plugin:?}")]
    PluginNotFound {
        /// The name asked for.
        plugin: String,
    },
    /// A plugin linked into the daemon: it has no gRPC methods.
    #[error("{plugin:?} is built into the daemon and has no gRPC methods to call")]
    Builtin {
        /// The plugin.
        plugin: String,
    },
    /// The catalog holds the plugin but will not run it now (disabled, invalid, another
    /// runtime).
    #[error("{reason}")]
    NotAvailable {
        /// The plugin.
        plugin: String,
        /// The catalog's explanation.
        reason: String,
    },
    /// The plugin could not be started; why is in the log and its status.
    #[error(
        "plugin {plugin:?} could not be started; its status says why (GET /api/v1/plugins/{plugin})"
    )]
    Unavailable {
        /// The plugin.
        plugin: String,
    },
    /// The call ran past the plugin's `resources.execution_ms` and was cancelled.
    #[error(
        "{method} of plugin {plugin:?} ran past its execution limit (resources.execution_ms) and was cancelled"
    )]
    Timeout {
        /// The plugin.
        plugin: String,
        /// The method's full name.
        method: String,
    },
    /// The plugin answered with a gRPC error.
    #[error("{code:?}: {message}")]
    PluginStatus {
        /// The plugin.
        plugin: String,
        /// The method's full name.
        method: String,
        /// The status code the plugin sent.
        code: tonic::Code,
        /// The plugin's message.
        message: String,
    },
    /// The method is not `package.Service/Method`, or the plugin's descriptors lack it.
    #[error(transparent)]
    MethodNotFound(TranscodeError),
    /// The JSON body does not fit the request message.
    #[error(transparent)]
    BadRequest(TranscodeError),
    /// The method streams; only unary methods can be called with one JSON body.
    #[error(transparent)]
    Streaming(TranscodeError),
    /// The `.proto` files in the plugin's folder do not compile.
    #[error(transparent)]
    BadDescriptors(TranscodeError),
    /// The plugin ships no `.proto` files and its gRPC reflection could not be read.
    #[error("plugin {plugin:?} ships no .proto files in its folder and {reason}")]
    NoDescriptors {
        /// The plugin.
        plugin: String,
        /// Why reflection failed.
        reason: TranscodeError,
    },
    /// The daemon failed; the detail is in its log.
    #[error("{message}")]
    Internal {
        /// What the caller is told.
        message: &'static str,
    },
}

impl CallError {
    /// The stable code the REST API and jobs report (`retry_on` of a job names these).
    pub fn code(&self) -> &'static str {
        match self {
            Self::PluginNotFound { .. } => "plugin_not_found",
            Self::Builtin { .. } => "builtin_plugin",
            Self::NotAvailable { .. } => "not_available",
            Self::Unavailable { .. } => "plugin_unavailable",
            Self::Timeout { .. } => "plugin_timeout",
            Self::PluginStatus { .. } => "plugin_error",
            Self::MethodNotFound(_) => "method_not_found",
            Self::BadRequest(_) => "bad_request",
            Self::Streaming(_) => "streaming_method",
            Self::BadDescriptors(_) => "bad_descriptors",
            Self::NoDescriptors { .. } => "no_descriptors",
            Self::Internal { .. } => "internal",
        }
    }

    /// Whether trying the same call again may succeed: the plugin could not be started, ran
    /// out of time or answered with an error. A wrong request or a missing plugin stays wrong.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::Timeout { .. } | Self::PluginStatus { .. }
        )
    }

    /// The error of a failed transcoding step of `plugin`'s call.
    pub(super) fn transcoding(plugin: &str, err: TranscodeError) -> Self {
        match err {
            TranscodeError::UnknownMethod { .. } | TranscodeError::MethodSyntax(_) => {
                Self::MethodNotFound(err)
            }
            TranscodeError::Streaming(_) => Self::Streaming(err),
            TranscodeError::Json { .. } => Self::BadRequest(err),
            TranscodeError::Compile { .. } => Self::BadDescriptors(err),
            TranscodeError::Reflection { .. } => Self::NoDescriptors {
                plugin: plugin.to_owned(),
                reason: err,
            },
        }
    }

    /// The error of the catalog refusing `plugin`'s handle.
    pub(super) fn catalog(plugin: &str, err: HostError) -> Self {
        match err {
            HostError::UnknownPlugin { plugin, .. } => Self::PluginNotFound { plugin },
            HostError::NotAvailable { .. } => Self::NotAvailable {
                plugin: plugin.to_owned(),
                reason: err.to_string(),
            },
            other => {
                tracing::warn!(plugin, error = %other, "plugin call failed");
                Self::Internal {
                    message: "the daemon could not do it; see its log",
                }
            }
        }
    }
}

#[cfg(test)]
impl CallError {
    /// One error of each kind, in declaration order.
    pub(crate) fn one_of_each() -> Vec<Self> {
        let plugin = || "kv".to_owned();
        vec![
            CallError::PluginNotFound { plugin: plugin() },
            CallError::Builtin { plugin: plugin() },
            CallError::NotAvailable {
                plugin: plugin(),
                reason: "disabled".into(),
            },
            CallError::Unavailable { plugin: plugin() },
            CallError::Timeout {
                plugin: plugin(),
                method: "kv.KV/Get".into(),
            },
            CallError::PluginStatus {
                plugin: plugin(),
                method: "kv.KV/Get".into(),
                code: tonic::Code::NotFound,
                message: "no such key".into(),
            },
            CallError::MethodNotFound(TranscodeError::MethodSyntax("Get".into())),
            CallError::BadRequest(TranscodeError::Json {
                message: "kv.GetRequest".into(),
                reason: "unknown field".into(),
            }),
            CallError::Streaming(TranscodeError::Streaming("kv.KV/Watch".into())),
            CallError::BadDescriptors(TranscodeError::Compile {
                files: "kv.proto".into(),
                reason: "syntax".into(),
            }),
            CallError::NoDescriptors {
                plugin: plugin(),
                reason: TranscodeError::Reflection {
                    reason: "not served".into(),
                },
            },
            CallError::Internal {
                message: "interrupted",
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unstartable_plugin_a_timeout_or_a_plugin_status_is_transient() {
        let transient: Vec<&str> = CallError::one_of_each()
            .iter()
            .filter(|err| err.is_transient())
            .map(CallError::code)
            .collect();
        assert_eq!(
            transient,
            ["plugin_unavailable", "plugin_timeout", "plugin_error"]
        );
    }

    #[test]
    fn transcoding_errors_keep_their_message_under_their_code() {
        let cases = [
            (
                TranscodeError::UnknownMethod {
                    method: "kv.KV/Nope".into(),
                    known: "kv.KV".into(),
                },
                "method_not_found",
            ),
            (
                TranscodeError::MethodSyntax("Nope".into()),
                "method_not_found",
            ),
            (
                TranscodeError::Streaming("kv.KV/Watch".into()),
                "streaming_method",
            ),
            (
                TranscodeError::Json {
                    message: "kv.GetRequest".into(),
                    reason: "bad".into(),
                },
                "bad_request",
            ),
            (
                TranscodeError::Compile {
                    files: "kv.proto".into(),
                    reason: "bad".into(),
                },
                "bad_descriptors",
            ),
        ];
        for (err, code) in cases {
            let message = err.to_string();
            let mapped = CallError::transcoding("kv", err);
            assert_eq!(mapped.code(), code);
            assert_eq!(mapped.to_string(), message);
        }
    }

    #[test]
    fn the_messages_callers_see_name_the_plugin_and_what_to_do() {
        let messages: Vec<String> = CallError::one_of_each()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(messages[0], r#"no plugin named "kv""#);
        assert_eq!(
            messages[1],
            r#""kv" is built into the daemon and has no gRPC methods to call"#
        );
        assert_eq!(
            messages[3],
            r#"plugin "kv" could not be started; its status says why (GET /api/v1/plugins/kv)"#
        );
        assert_eq!(
            messages[4],
            r#"kv.KV/Get of plugin "kv" ran past its execution limit (resources.execution_ms) and was cancelled"#
        );
        assert_eq!(messages[5], "NotFound: no such key");
        assert_eq!(
            messages[10],
            r#"plugin "kv" ships no .proto files in its folder and cannot read the plugin's descriptors through gRPC reflection: not served"#
        );
    }
}
