//! Files whose content OpenAI will act on in bulk: a `batch` or `fine-tune` upload is
//! checked line by line (`routes::batch_file`) and replaced by its checked, rewritten form
//! before it goes upstream. An Uploads API upload of those purposes is refused: its parts
//! arrive in pieces that cut lines apart, so Warden could not check them.

use crate::endpoint::Endpoint;
use crate::error::WardenError;
use crate::pipeline::{RequestContext, Stage, StageResult, Step, Verdict};
use crate::routes::batch_file::{Checker, Purpose};

pub struct UploadedFile {
    checker: Checker,
}

impl UploadedFile {
    pub fn new(checker: Checker) -> Self {
        Self { checker }
    }

    async fn check(&self, ctx: &mut RequestContext) -> StageResult {
        let Some(form) = ctx.form.as_ref() else {
            return Ok(Verdict::Allow);
        };
        let Some(purpose) = form.field("purpose").and_then(Purpose::of) else {
            return Ok(Verdict::Allow);
        };
        let file = form.file("file").ok_or_else(|| WardenError::FileRefused {
            code: "missing_file",
            message: "The form has no 'file' part with a file name.".into(),
        })?;
        let data = file.data.clone();
        let started = std::time::Instant::now();
        let (checked, summary) = self.checker.check(ctx, purpose, &data).await?;
        tracing::info!(
            request_id = %ctx.request_id,
            lines = summary.lines,
            moderation_rounds = summary.moderation_rounds,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "uploaded file checked"
        );
        ctx.form_file = Some(checked);
        Ok(Verdict::Rewrite)
    }
}

impl Stage for UploadedFile {
    fn name(&self) -> &'static str {
        "uploaded_file"
    }

    fn run<'a>(&'a self, ctx: &'a mut RequestContext) -> Step<'a> {
        let Some(route) = ctx.endpoint.route() else {
            return Step::Ready(Ok(Verdict::Allow));
        };
        if route.checks != crate::routes::Checks::UploadedFile {
            return Step::Ready(Ok(Verdict::Allow));
        }
        if matches!(ctx.endpoint, Endpoint::Rest(_)) && route.label == "uploads.create" {
            let purpose = ctx
                .body
                .as_ref()
                .and_then(|b| b.str_field("purpose").ok().flatten());
            if purpose.as_deref().and_then(Purpose::of).is_some() {
                return Step::Ready(Err(WardenError::FileRefused {
                    code: "purpose_not_checkable",
                    message: "Warden checks batch and fine-tune files line by line, which it cannot do for an upload sent in parts. Upload the file with POST /v1/files (up to 512 MB).".into(),
                }));
            }
            return Step::Ready(Ok(Verdict::Allow));
        }
        Step::Pending(Box::pin(self.check(ctx)))
    }
}
