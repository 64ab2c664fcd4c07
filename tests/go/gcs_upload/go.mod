module beamport.test/gcs_upload

go 1.24

require cloud.google.com/go/storage v1.65.0
