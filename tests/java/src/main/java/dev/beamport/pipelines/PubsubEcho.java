package dev.beamport.pipelines;

import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.io.gcp.pubsub.PubsubIO;
import org.apache.beam.sdk.metrics.Counter;
import org.apache.beam.sdk.metrics.Metrics;
import org.apache.beam.sdk.options.Description;
import org.apache.beam.sdk.options.StreamingOptions;
import org.apache.beam.sdk.options.Validation;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.ParDo;

/**
 * A streaming Java Pub/Sub pipeline as a Dataflow user writes it: each message of a subscription, upper-cased, to
 * a topic, counted. Nothing here names an endpoint: where Pub/Sub is, is the runner's business.
 */
public class PubsubEcho {
  /** Where the messages come from and go. */
  public interface Options extends StreamingOptions {
    @Description("The subscription to read (projects/P/subscriptions/S)")
    @Validation.Required
    String getInputSubscription();

    void setInputSubscription(String value);

    @Description("The topic to publish to (projects/P/topics/T)")
    @Validation.Required
    String getOutput();

    void setOutput(String value);
  }

  /** Upper-cases a message, counting it. */
  static class Shout extends DoFn<String, String> {
    private final Counter echoed = Metrics.counter(PubsubEcho.class, "echoed");

    @ProcessElement
    public void processElement(@Element String message, OutputReceiver<String> out) {
      echoed.inc();
      out.output(message.toUpperCase());
    }
  }

  public static void main(String[] args) {
    Options options =
        org.apache.beam.sdk.options.PipelineOptionsFactory.fromArgs(args).withValidation().as(Options.class);
    options.setStreaming(true);
    Pipeline pipeline = Pipeline.create(options);
    pipeline
        .apply("Read", PubsubIO.readStrings().fromSubscription(options.getInputSubscription()))
        .apply("Shout", ParDo.of(new Shout()))
        .apply("Write", PubsubIO.writeStrings().to(options.getOutput()));
    pipeline.run();
    System.out.println("SUBMITTED");
  }
}
