// default_credentials finds Google default credentials as Beam Go's Dataflow runner does (golang.org/x/oauth2/google),
// which on a VM means the metadata server (GCE_METADATA_HOST names it), and prints the project and a token.
package main

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/oauth2/google"
)

func main() {
	ctx := context.Background()
	credentials, err := google.FindDefaultCredentials(ctx, "https://www.googleapis.com/auth/cloud-platform")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	token, err := credentials.TokenSource.Token()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(credentials.ProjectID, token.AccessToken)
}
