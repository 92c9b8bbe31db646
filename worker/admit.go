package worker

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/auth"
	"github.com/omninode/lockworker/topics"
)

// admit applies the deployment's own rules to a valid command and returns
// it as the handlers must see it, or a *topics.Rejection, answered and
// dead-lettered like a command that broke the contract: those of
// authorize, then that request_ids of the form the worker generates are
// its own, then REQUIRE_FENCING_TOKEN's.
func (w *Worker) admit(ctx context.Context, c topics.Command, r *kgo.Record) (topics.Command, error) {
	// Cleared before any refusal is made: see generatedID.
	forged := ""
	if w.generatedID(c.RequestID) {
		forged, c.RequestID = c.RequestID, ""
	}
	c, err := w.authorize(ctx, c, r)
	if err != nil {
		return c, err
	}
	if forged != "" {
		return c, &topics.Rejection{Command: c, Code: topics.CodeInvalidRequest, Message: fmt.Sprintf(
			"request_id %q has the form the worker gives commands without one (%s/<partition>/<offset>)", forged, w.cfg.Names.Commands)}
	}
	// A release without one may still withdraw its owner's wait (the
	// handler refuses it for a lease): the SDK's withdrawal of an acquire
	// it gave up on has no token to send.
	if op, _ := topics.LookupOperation(c.Operation); w.cfg.RequireFencingToken && c.FencingToken == nil &&
		slices.Contains(op.Fields, "fencing_token") && c.Operation != topics.OpRelease {
		return c, &topics.Rejection{Command: c, Code: topics.CodeInvalidRequest,
			Message: "fencing_token is required for " + c.Operation + " (REQUIRE_FENCING_TOKEN)"}
	}
	return c, nil
}

// refused puts a record Decode refused through authorize's rules, so that
// its rejection is answered only where a valid command's would be: a
// record without a valid token, or naming a reply topic it may not use, is
// not answered there whatever else is wrong with it. A refusal of who may
// do what (UNAUTHENTICATED, FORBIDDEN) replaces Decode's; the length of the
// scoped owner_id does not: it is a field's rule, and Decode's refusal was
// judged before it (v before every field). A reply topic past
// MaxReplyTopics leaves Decode's rejection its code, as it leaves a refusal
// of the rules theirs, and is only said in its message ("; not answered:
// ...").
func (w *Worker) refused(ctx context.Context, rej *topics.Rejection, r *kgo.Record) *topics.Rejection {
	c := rej.Command
	if w.generatedID(c.RequestID) {
		c.RequestID = "" // see generatedID
	}
	if !topics.ValidReplyTo(c.ReplyTo, w.cfg.Names.ReplyPrefix) {
		c.ReplyTo = "" // nothing to authorize: it is answered nowhere
	}
	c, own := w.requesterRules(c, r)
	if own == nil || (own.Code != topics.CodeUnauthenticated && own.Code != topics.CodeForbidden) {
		own = &topics.Rejection{Command: c, Code: rej.Code, Message: rej.Message}
	}
	_, own = w.boundReplyTo(ctx, c, own)
	return own
}

// generatedID reports whether id has the form the worker gives a command
// without a request_id, <commands topic>/<partition>/<offset>. A command
// that sends one is refused (admit): it could have another's command
// answered with its outcome. Nor is its refusal answered under it, on a
// reply_to that may be another requester's: one whose command at that
// offset is answered under that id would read the refusal as its own. It
// carries no request_id, as the refusal of a record sent without one.
func (w *Worker) generatedID(id string) bool {
	return strings.HasPrefix(id, w.cfg.Names.Commands+"/")
}

// authorize applies the rules that say who sent a command and where it may
// be answered, to every record before it is answered.
//
// With authentication (Config.Auth), the record's token names the
// requester, and:
//   - without a valid token the command is UNAUTHENTICATED, and answered
//     only in the dead-letter topic: its reply_to is not to be trusted;
//   - reply_to may only be the requester's own reply topic, and the
//     namespace one its token allows (FORBIDDEN otherwise);
//   - owner_id, where the operation reads it, is scoped by the requester:
//     "<requester>:<owner_id>" is the owner the handlers see and events
//     show, so no other requester can
//     release, extend or wait as that owner. An owner_id that already
//     carries the requester's own scope keeps it, so one read back from an
//     event can be sent again;
//   - revoke is administrative: only a requester whose token has the admin
//     claim may send it (FORBIDDEN otherwise), and its owner_id names a
//     holder as events show it (any requester's), so it is not scoped.
//
// A reply_to that names a topic that does not exist must stay within
// MaxReplyTopics (see replyTopics): the reply topic a command is answered
// on in the end, whether it is accepted or refused (FORBIDDEN's is the
// requester's own), is checked in one place. A command refused for that
// alone is refused FORBIDDEN, answered only in the dead-letter topic; one
// refused for another reason (here, or by Decode: refused) keeps its
// refusal, answered only in the dead-letter topic as well.
func (w *Worker) authorize(ctx context.Context, c topics.Command, r *kgo.Record) (topics.Command, error) {
	c, rej := w.requesterRules(c, r)
	if c, rej = w.boundReplyTo(ctx, c, rej); rej != nil {
		return c, rej
	}
	return c, nil
}

// boundReplyTo holds the reply topic c is answered on in the end to
// MaxReplyTopics (authorize): past it, c loses its reply_to, and is
// refused FORBIDDEN if rej, its refusal so far, is nil; rej keeps its code
// otherwise, its message saying why it is not answered.
func (w *Worker) boundReplyTo(ctx context.Context, c topics.Command, rej *topics.Rejection) (topics.Command, *topics.Rejection) {
	if c.ReplyTo == "" || w.replies == nil {
		return c, rej
	}
	ok, n := w.replies.allow(ctx, c.ReplyTo)
	if ok {
		return c, rej
	}
	why := fmt.Sprintf("reply topic %q does not exist and may not be created (%d reply topics exist; MAX_REPLY_TOPICS is %d, AUTO_CREATE_REPLY_TOPICS %v",
		c.ReplyTo, n, w.replies.max, w.replies.create)
	if !w.replies.create {
		// The brokers say the same of a topic the worker may not see.
		why += "; a topic this worker's Kafka principal may not describe counts as missing"
	}
	why += ")"
	c.ReplyTo = "" // it cannot be answered there
	if rej == nil {
		return c, &topics.Rejection{Command: c, Code: topics.CodeForbidden, Message: why}
	}
	rej.Command = c
	// First: the dead-letter header is cut at 512 bytes, and this is why
	// the refusal was answered nowhere.
	rej.Message = "not answered: " + why + "; " + rej.Message
	return c, rej
}

// requesterRules applies Config.Auth's rules (authorize), returning the
// command as the handlers must see it and answered, and its refusal if it
// is refused. Without a valid token, reply_to is dropped.
func (w *Worker) requesterRules(c topics.Command, r *kgo.Record) (topics.Command, *topics.Rejection) {
	if w.cfg.Auth == nil {
		return c, nil
	}
	token, err := recordToken(r)
	var who auth.Requester
	if err == nil {
		who, err = w.cfg.Auth.Verify(token)
	}
	if err != nil {
		c.ReplyTo = "" // not to be trusted
		return c, &topics.Rejection{Command: c, Code: topics.CodeUnauthenticated, Message: err.Error()}
	}
	own := w.cfg.Names.ReplyTopic(who.Name)
	if c.ReplyTo != "" && c.ReplyTo != own {
		c.ReplyTo = own
		return c, &topics.Rejection{Command: c, Code: topics.CodeForbidden,
			Message: fmt.Sprintf("requester %q may only use its own reply topic %q", who.Name, own)}
	}
	if !who.MayUse(c.Namespace) {
		return c, &topics.Rejection{Command: c, Code: topics.CodeForbidden,
			Message: fmt.Sprintf("requester %q may not use namespace %q", who.Name, c.Namespace)}
	}
	if c.Operation == topics.OpRevoke && !who.Admin {
		return c, &topics.Rejection{Command: c, Code: topics.CodeForbidden,
			Message: fmt.Sprintf("requester %q may not revoke: its token has no admin claim", who.Name)}
	}
	// Scoped where the operation needs an owner: query and cleanup ignore
	// owner_id (scoped, a long one would be refused for its length), and a
	// revoke's names an owner as it is stored.
	op, _ := topics.LookupOperation(c.Operation)
	if scoped := topics.ScopedOwner(who.Name, c.OwnerID); c.OwnerID != "" && op.NeedsOwner && scoped != c.OwnerID {
		c.OwnerID = scoped
		if len(c.OwnerID) > topics.MaxOwnerIDBytes {
			return c, &topics.Rejection{Command: c, Code: topics.CodeInvalidRequest,
				Message: fmt.Sprintf("owner_id scoped by the requester (%q + ':') must be at most %d bytes", who.Name, topics.MaxOwnerIDBytes)}
		}
	}
	return c, nil
}

// recordToken is the record's one authorization header.
func recordToken(r *kgo.Record) (string, error) {
	token, n := "", 0
	for _, h := range r.Headers {
		if strings.EqualFold(h.Key, topics.HeaderAuthorization) {
			if len(h.Value) > 2*topics.MaxTokenBytes { // room for "Bearer " and spaces, which Verify trims
				return "", fmt.Errorf("%w: %s header longer than %d bytes", auth.ErrUnauthenticated, topics.HeaderAuthorization, 2*topics.MaxTokenBytes)
			}
			token, n = string(h.Value), n+1
		}
	}
	switch n {
	case 0:
		return "", fmt.Errorf("%w: no %s header", auth.ErrUnauthenticated, topics.HeaderAuthorization)
	case 1:
		return token, nil
	}
	return "", fmt.Errorf("%w: %d %s headers", auth.ErrUnauthenticated, n, topics.HeaderAuthorization)
}
