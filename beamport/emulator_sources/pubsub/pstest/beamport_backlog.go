package pstest

// Added to pstest by Beamport when it builds its Pub/Sub emulator (emulators.py, PUBSUB's additions): what Cloud
// Monitoring tells of a subscription (num_undelivered_messages, backlog_bytes, oldest_unacked_message_age), which
// pstest keeps unexported.

import (
	"time"

	"google.golang.org/protobuf/proto"
)

// Backlog is the number of a subscription's unacknowledged messages (delivered or not), their size in bytes (each
// one's PubsubMessage encoded: its data, attributes, id and publish time) and how long the oldest of them has waited
// since it was published, by the server's clock (0 when there is none).
func (s *GServer) Backlog(name string) (messages, bytes int64, oldestAge time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, err := s.findSubscription(name)
	if err != nil {
		return 0, 0, 0, err
	}
	now := s.now()
	for _, m := range sub.msgs {
		messages++
		bytes += int64(proto.Size(m.proto.Message))
		if age := now.Sub(m.publishTime); age > oldestAge {
			oldestAge = age
		}
	}
	return messages, bytes, oldestAge, nil
}
