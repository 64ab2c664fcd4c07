package dev.beamport.flink;

import org.apache.beam.runners.flink.FlinkJobInvoker;
import org.apache.beam.runners.flink.FlinkJobServerDriver;
import org.apache.beam.runners.flink.FlinkJobServerDriver.FlinkServerConfiguration;
import org.apache.beam.runners.jobsubmission.JobServerDriver;
import org.apache.beam.sdk.extensions.gcp.options.GcsOptions;
import org.apache.beam.sdk.io.FileSystems;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;

/**
 * Beam's Flink job server (FlinkJobServerDriver: the same flags, the same job invoker), with its Job API and
 * artifact staging on loopback only (LoopbackServerFactory). Beam's listens on every interface, and whoever
 * reaches it can run a pipeline on the cluster; scripts/flink-cluster starts this one.
 */
public final class LoopbackFlinkJobServer extends JobServerDriver {
  private LoopbackFlinkJobServer(FlinkServerConfiguration configuration) {
    super(
        configuration,
        new LoopbackServerFactory(),
        new LoopbackServerFactory(),
        () -> FlinkJobInvoker.create(configuration));
  }

  public static void main(String[] args) throws Exception {
    // As FlinkJobServerDriver.main: GCS uploads of staged artifacts in 1 MB buffers.
    PipelineOptions options = PipelineOptionsFactory.create();
    options.as(GcsOptions.class).setGcsUploadBufferSizeBytes(1024 * 1024);
    FileSystems.setDefaultPipelineOptions(options);
    new LoopbackFlinkJobServer(FlinkJobServerDriver.parseArgs(args)).run();
  }
}
