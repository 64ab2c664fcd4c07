package main

// Pub/Sub's REST API (https://cloud.google.com/pubsub/docs/reference/rest) over pstest's own calls: each REST
// method's resource name comes from the path, the rest of its request from the JSON body, and its answer goes
// back as JSON. REST's JSON is the protos' JSON mapping (camelCase names, bytes as base64, timestamps as RFC
// 3339), so protojson translates both ways. Errors carry gRPC's code as REST's HTTP status.

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	rpccode "google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// A REST method: the request to fill (its resource name set from the path) and the call that answers it.
type method func(ctx context.Context, s *pstest.GServer, name string, body []byte) (proto.Message, error)

// methods by HTTP method, the path's collection ("topics", "subscriptions", or "" for a project's) and its
// custom verb (":publish"...), as Pub/Sub's v1 REST API names them.
var methods = map[string]method{
	"PUT topics": func(ctx context.Context, s *pstest.GServer, name string, body []byte) (proto.Message, error) {
		req := &pubsubpb.Topic{}
		return fill(req, body, func() { req.Name = name }, func() (proto.Message, error) { return s.CreateTopic(ctx, req) })
	},
	"GET topics": func(ctx context.Context, s *pstest.GServer, name string, body []byte) (proto.Message, error) {
		return s.GetTopic(ctx, &pubsubpb.GetTopicRequest{Topic: name})
	},
	"DELETE topics": func(ctx context.Context, s *pstest.GServer, name string, body []byte) (proto.Message, error) {
		return empty(s.DeleteTopic(ctx, &pubsubpb.DeleteTopicRequest{Topic: name}))
	},
	"POST topics:publish": func(ctx context.Context, s *pstest.GServer, name string, body []byte) (proto.Message, error) {
		req := &pubsubpb.PublishRequest{}
		return fill(req, body, func() { req.Topic = name }, func() (proto.Message, error) { return s.Publish(ctx, req) })
	},
	"GET topics/subscriptions": func(ctx context.Context, s *pstest.GServer, name string, body []byte) (proto.Message, error) {
		return s.ListTopicSubscriptions(ctx, &pubsubpb.ListTopicSubscriptionsRequest{Topic: name})
	},
	"GET projects/topics": func(ctx context.Context, s *pstest.GServer, name string, body []byte) (proto.Message, error) {
		return s.ListTopics(ctx, &pubsubpb.ListTopicsRequest{Project: name})
	},
	"PUT subscriptions": func(ctx context.Context, s *pstest.GServer, name string, body []byte) (proto.Message, error) {
		req := &pubsubpb.Subscription{}
		return fill(req, body, func() { req.Name = name }, func() (proto.Message, error) { return s.CreateSubscription(ctx, req) })
	},
	"GET subscriptions": func(ctx context.Context, s *pstest.GServer, name string, body []byte) (proto.Message, error) {
		return s.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: name})
	},
	"DELETE subscriptions": func(ctx context.Context, s *pstest.GServer, name string, body []byte) (proto.Message, error) {
		return empty(s.DeleteSubscription(ctx, &pubsubpb.DeleteSubscriptionRequest{Subscription: name}))
	},
	"GET projects/subscriptions": func(ctx context.Context, s *pstest.GServer, name string, body []byte) (proto.Message, error) {
		return s.ListSubscriptions(ctx, &pubsubpb.ListSubscriptionsRequest{Project: name})
	},
	// Beamport's: a subscription's backlog as Cloud Monitoring names it (subscription/num_undelivered_messages,
	// subscription/backlog_bytes and subscription/oldest_unacked_message_age, here in milliseconds), which no Pub/Sub
	// API serves and Beamport's Pub/Sub reader reports.
	"GET subscriptions:backlog": func(ctx context.Context, s *pstest.GServer, name string, body []byte) (proto.Message, error) {
		messages, bytes, oldest, err := s.Backlog(name)
		if err != nil {
			return nil, err
		}
		return structpb.NewStruct(map[string]any{
			"numUndeliveredMessages":    messages,
			"backlogBytes":              bytes,
			"oldestUnackedMessageAgeMs": oldest.Milliseconds(),
		})
	},
	"POST subscriptions:pull": func(ctx context.Context, s *pstest.GServer, name string, body []byte) (proto.Message, error) {
		req := &pubsubpb.PullRequest{}
		return fill(req, body, func() { req.Subscription = name }, func() (proto.Message, error) { return s.Pull(ctx, req) })
	},
	"POST subscriptions:acknowledge": func(ctx context.Context, s *pstest.GServer, name string, body []byte) (proto.Message, error) {
		req := &pubsubpb.AcknowledgeRequest{}
		return fill(req, body, func() { req.Subscription = name }, func() (proto.Message, error) { return empty(s.Acknowledge(ctx, req)) })
	},
	"POST subscriptions:modifyAckDeadline": func(ctx context.Context, s *pstest.GServer, name string, body []byte) (proto.Message, error) {
		req := &pubsubpb.ModifyAckDeadlineRequest{}
		return fill(req, body, func() { req.Subscription = name }, func() (proto.Message, error) { return empty(s.ModifyAckDeadline(ctx, req)) })
	},
}

// fill decodes the body into req, names its resource, and calls.
func fill(req proto.Message, body []byte, name func(), call func() (proto.Message, error)) (proto.Message, error) {
	if len(body) > 0 {
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, req); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	name()
	return call()
}

func empty(_ *emptypb.Empty, err error) (proto.Message, error) {
	return &emptypb.Empty{}, err
}

// restHandler answers /v1/projects/P[/topics|/subscriptions[/NAME[/subscriptions]]][:verb].
func restHandler(s *pstest.GServer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path, verb, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v1/"), ":")
		parts := strings.Split(path, "/")
		var key, name string
		switch {
		case len(parts) == 3 && parts[0] == "projects": // projects/P/topics
			key, name = "projects/"+parts[2], strings.Join(parts[:2], "/")
		case len(parts) == 4 && parts[0] == "projects": // projects/P/topics/T
			key, name = parts[2], path
		case len(parts) == 5 && parts[0] == "projects" && parts[2] == "topics": // projects/P/topics/T/subscriptions
			key, name = "topics/"+parts[4], strings.Join(parts[:4], "/")
		}
		if verb != "" {
			key += ":" + verb
		}
		call, found := methods[r.Method+" "+key]
		if !found {
			answer(w, nil, status.Errorf(codes.NotFound, "%s %s is not a Pub/Sub REST method this emulator serves", r.Method, r.URL.Path))
			return
		}
		body, err := readBody(r)
		if err != nil {
			answer(w, nil, status.Error(codes.InvalidArgument, err.Error()))
			return
		}
		message, err := call(r.Context(), s, name, body)
		answer(w, message, err)
	})
}

// readBody reads a request's body, gunzipped if it came gzipped (Google's Java clients send it so).
func readBody(r *http.Request) ([]byte, error) {
	var reader io.Reader = r.Body
	if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
		gunzip, err := gzip.NewReader(r.Body)
		if err != nil {
			return nil, err
		}
		defer gunzip.Close()
		reader = gunzip
	}
	return io.ReadAll(io.LimitReader(reader, maxBody))
}

// maxBody is more than Pub/Sub's largest request (10 MB of messages, as JSON's base64).
const maxBody = 64 << 20

// httpStatus is REST's status for a gRPC code (google.rpc.Code's mapping).
var httpStatus = map[codes.Code]int{
	codes.InvalidArgument: 400, codes.FailedPrecondition: 400, codes.OutOfRange: 400,
	codes.Unauthenticated: 401, codes.PermissionDenied: 403, codes.NotFound: 404,
	codes.AlreadyExists: 409, codes.Aborted: 409, codes.ResourceExhausted: 429,
	codes.Canceled: 499, codes.Unimplemented: 501, codes.Unavailable: 503, codes.DeadlineExceeded: 504,
}

func answer(w http.ResponseWriter, message proto.Message, err error) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	if err != nil {
		st := status.Convert(err)
		code, known := httpStatus[st.Code()]
		if !known {
			code = 500
		}
		w.WriteHeader(code)
		body, _ := json.Marshal(map[string]any{
			"error": map[string]any{"code": code, "message": st.Message(), "status": rpccode.Code(st.Code()).String()},
		})
		w.Write(body)
		return
	}
	body, _ := protojson.Marshal(message)
	w.Write(body)
}
