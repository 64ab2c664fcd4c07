package pstest

// Added to pstest by Beamport when it builds its Pub/Sub emulator (emulators.py, PUBSUB's additions): what Cloud
// Monitoring tells of a subscription (num_undelivered_messages, backlog_bytes), which pstest keeps unexported.

import "google.golang.org/protobuf/proto"

// Backlog is the number of a subscription's unacknowledged messages (delivered or not) and their size in bytes:
// each one's PubsubMessage encoded, its data, attributes, id and publish time.
func (s *GServer) Backlog(name string) (messages, bytes int64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, err := s.findSubscription(name)
	if err != nil {
		return 0, 0, err
	}
	for _, m := range sub.msgs {
		messages++
		bytes += int64(proto.Size(m.proto.Message))
	}
	return messages, bytes, nil
}
